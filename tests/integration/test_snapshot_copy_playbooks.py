# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/copy_snapshots.yml (configured from the environment, as the CronJob runs it) and playbooks/restore.yml,
through ansible-runner against moto."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest
import yaml

from tests.emulators import k8s_server
from tests.peers import moto, runner
from tests.peers.moto import write_velero_backup

SRC, DST = "eu-west-1", "eu-central-1"
INVENTORY = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}
K8S_TOKEN = "k8sRestoreToken-9VqT2mXw4Lp7Rz"


@pytest.fixture
def cluster():
    """The Kubernetes API emulator (tests/emulators/k8s_server.py) in a thread of this process."""
    server = k8s_server.start(K8S_TOKEN)
    yield server
    server.stop()


def write_kubeconfig(path, server, token=None):
    with open(os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        yaml.safe_dump(server.kubeconfig(token), handle)
    return str(path)


def environment(server, **extra):
    env = dict(AWS_ACCESS_KEY_ID=moto.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=moto.SECRET_KEY, AWS_ENDPOINT_URL=server.endpoint,
               AWS_REGION=SRC, SNAPSHOT_COPY_DESTINATION_REGIONS=DST, VELERO_BUCKET="velero", VELERO_SCHEDULE="daily",
               SNAPSHOT_COPY_RETENTION_DAYS="14")
    env.update(extra)
    return env


def velero_backup(server):
    ec2 = server.client("ec2", SRC)
    volume = ec2.create_volume(Size=2, AvailabilityZone="eu-west-1a", VolumeType="gp3")
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"], TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "kubernetes.io/created-for/pvc/name", "Value": "data-db-0"}, {"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "shop"}]}])
    s3 = server.client("s3", SRC)
    s3.create_bucket(Bucket="velero", CreateBucketConfiguration={"LocationConstraint": SRC})
    write_velero_backup(s3, "velero", "daily-20260310010000", "daily",
                        [dict(snapshot_id=snap["SnapshotId"], pv="pv-a", volume_id=volume["VolumeId"])])
    return snap["SnapshotId"]


def private_dir(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return str(path)


def copy_run(server, tmp_path, name, **env):
    return runner.run_playbook(os.path.join(runner.ROOT, "playbooks", "copy_snapshots.yml"), INVENTORY,
                               extravars={"snapshot_copy_wait_sleep": 0.01}, envvars=environment(server, **env),
                               private_dir=private_dir(tmp_path, name))


def test_copy_snapshots_playbook_copies_once_and_honours_the_opt_out(moto_server, tmp_path):
    velero_backup(moto_server)
    off = copy_run(moto_server, tmp_path, "off", SNAPSHOT_COPY_DISABLED="true")
    assert off.status == "successful", off.stdout
    assert off.custom_stats()["vmimage_snapshot_copy"]["disabled"] is True
    assert moto_server.client("ec2", DST).describe_snapshots(OwnerIds=["self"])["Snapshots"] == []

    first = copy_run(moto_server, tmp_path, "first")
    assert first.status == "successful", first.stdout
    assert len(first.custom_stats()["vmimage_snapshot_copy"]["copied"]) == 1
    second = copy_run(moto_server, tmp_path, "second", SNAPSHOT_COPY_DISABLED="")
    assert second.status == "successful" and second.stats["changed"] == {}, second.stdout
    assert second.custom_stats()["vmimage_snapshot_copy"]["copied"] == []
    assert moto.SECRET_KEY not in first.stdout + second.stdout


def test_restore_playbook_writes_valid_manifests_and_creates_the_volume_in_the_cluster(moto_server, tmp_path, cluster):
    velero_backup(moto_server)
    assert copy_run(moto_server, tmp_path, "copy").status == "successful"
    listed = runner.run_playbook(os.path.join(runner.ROOT, "playbooks", "restore.yml"), INVENTORY, extravars=dict(
        restore_snapshot_region=DST, restore_list_only=True), envvars=environment(moto_server), private_dir=private_dir(tmp_path, "list"))
    assert listed.status == "successful", listed.stdout
    (shown,) = listed.task_results("Show the replicated snapshots")
    assert len(shown["msg"]) == 1 and shown["msg"][0].endswith("shop  data-db-0  daily-20260310010000"), shown
    assert not listed.task_results("Restore the snapshot to a new volume")
    out = tmp_path / "manifests"
    out.mkdir()
    run = runner.run_playbook(os.path.join(runner.ROOT, "playbooks", "restore.yml"), INVENTORY, extravars=dict(
        restore_snapshot_region=DST, restore_region=SRC, restore_availability_zone="eu-west-1b", restore_pvc_name="data-db-0",
        restore_backup="daily-20260310010000", restore_output_dir=str(out), restore_wait_sleep=0.01,
        restore_kubeconfig=write_kubeconfig(tmp_path / "kubeconfig", cluster)),
        envvars=environment(moto_server), private_dir=private_dir(tmp_path, "restore"))
    assert run.status == "successful", run.stdout
    run.assert_nowhere(K8S_TOKEN)
    pv = yaml.safe_load((out / "pv.yaml").read_text())
    pvc = yaml.safe_load((out / "pvc.yaml").read_text())
    for manifest in (pv, pvc):
        kubernetes_validate.validate(manifest, "1.30", strict=True)
    assert pv["spec"]["csi"]["driver"] == "ebs.csi.aws.com" and pvc["metadata"] == {"name": "data-db-0", "namespace": "shop"}
    (volume,) = moto_server.client("ec2", SRC).describe_volumes(VolumeIds=[pv["spec"]["csi"]["volumeHandle"]])["Volumes"]
    assert volume["AvailabilityZone"] == "eu-west-1b"
    # The cluster holds the PersistentVolume that pv.yaml describes (kubernetes.core.k8s, through the API).
    made = cluster.cluster.objects.get(("persistentvolumes", "", pv["metadata"]["name"]))
    assert made is not None and {k: made["spec"][k] for k in pv["spec"]} == pv["spec"], cluster.cluster.objects
    assert made["status"] == {"phase": "Pending"}  # no controller binds it here


APPLY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Apply the restored volume's PersistentVolume
      ansible.builtin.include_tasks: {tasks}
"""


def apply_run(tmp_path, name, kubeconfig, pv):
    """playbooks/tasks/apply_k8s.yml alone (what restore.yml includes), with restore_result holding ``pv``."""
    playbook = tmp_path / ("%s.yml" % name)
    playbook.write_text(APPLY.format(tasks=os.path.join(runner.ROOT, "playbooks", "tasks", "apply_k8s.yml")))
    return runner.run_playbook(str(playbook), INVENTORY, extravars=dict(restore_kubeconfig=kubeconfig, restore_result={"persistent_volume": pv}),
                               private_dir=private_dir(tmp_path, name))


def test_applying_the_volume_again_changes_nothing_and_a_bad_cluster_answer_is_a_clear_failure(tmp_path, cluster):
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "restored-data-db-0"},
          "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
                   "storageClassName": "", "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0123456789abcdef0", "fsType": "ext4"},
                   "claimRef": {"name": "data-db-0", "namespace": "shop"}}}
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster)
    first = apply_run(tmp_path, "first", kubeconfig, pv)
    assert first.status == "successful" and first.stats["changed"] == {"localhost": 1}, first.stdout
    version = cluster.cluster.objects[("persistentvolumes", "", "restored-data-db-0")]["metadata"]["resourceVersion"]
    again = apply_run(tmp_path, "again", kubeconfig, pv)
    assert again.status == "successful" and again.stats["changed"] == {}, again.stdout
    assert cluster.cluster.objects[("persistentvolumes", "", "restored-data-db-0")]["metadata"]["resourceVersion"] == version

    # Another volume under the same name: a PersistentVolume's source cannot change, and the API server says so.
    moved = apply_run(tmp_path, "moved", kubeconfig, dict(pv, spec=dict(pv["spec"], csi=dict(pv["spec"]["csi"], volumeHandle="vol-0fedcba987654321f"))))
    assert moved.status == "failed" and "spec.persistentvolumesource is immutable after creation" in moved.stdout, moved.stdout
    # A wrong token: 401 from the API server, named; no token in the output.
    refused = apply_run(tmp_path, "refused", write_kubeconfig(tmp_path / "bad-kubeconfig", cluster, token="not-the-token-0000"), pv)
    assert refused.status == "failed" and "Unauthorized" in refused.stdout, refused.stdout
    for run in (first, again, moved, refused):
        run.assert_nowhere(K8S_TOKEN)
    refused.assert_nowhere("not-the-token-0000")
    assert cluster.cluster.objects[("persistentvolumes", "", "restored-data-db-0")]["spec"] == dict(pv["spec"], volumeMode="Filesystem")
