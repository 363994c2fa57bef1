# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""snapshot_copy_info and snapshot_restore on moto: list the copies, restore one to a volume (copied back), valid manifests."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from tests.contract import assert_return_contract
from tests.harness import run_module
from tests.peers import moto

SRC, DST = "eu-west-1", "eu-central-1"
K8S = "1.30"


@pytest.fixture
def replicated(moto_server):
    ec2 = moto_server.client("ec2", SRC)
    volume = ec2.create_volume(Size=3, AvailabilityZone="eu-west-1b", VolumeType="gp3", Iops=4000)
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"], TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "backup", "Value": "nightly"}, {"Key": "kubernetes.io/created-for/pvc/name", "Value": "data-db-0"},
        {"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "shop"}]}])
    other = ec2.create_volume(Size=1, AvailabilityZone="eu-west-1a")
    ec2.create_snapshot(VolumeId=other["VolumeId"], TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "backup", "Value": "nightly"}]}])
    result = run_module("snapshot_copy", moto_server.auth(region=SRC, destination_regions=[DST], tags={"backup": "nightly"},
                                                          retention_count=3, wait_sleep=0.01))
    assert result["changed"] is True, result
    return snap["SnapshotId"]


def restore_args(server, snapshot_id, **extra):
    value = server.auth(region=SRC, snapshot_region=DST, snapshot_id=snapshot_id, availability_zone="eu-west-1c", wait_sleep=0.01,
                        wait_timeout=60)
    value.update(extra)
    return value


def test_list_then_restore_gives_a_volume_and_valid_manifests(moto_server, replicated):
    listed = run_module("snapshot_copy_info", moto_server.auth(region=DST, pvc_name="data-db-0"))
    (copy,) = listed["snapshots"]
    assert copy["origin_snapshot_id"] == replicated and copy["pvc_namespace"] == "shop" and copy["volume_type"] == "gp3"
    assert len(run_module("snapshot_copy_info", moto_server.auth(region=DST))["snapshots"]) == 2

    preview = run_module("snapshot_restore", restore_args(moto_server, copy["id"]), check_mode=True)
    assert preview["changed"] is True and preview["volume_id"] is None, preview
    assert moto_server.client("ec2", SRC).describe_volumes(Filters=[{"Name": "tag:created-by", "Values": ["vmimage.replication"]}])["Volumes"] == []

    result = run_module("snapshot_restore", restore_args(moto_server, copy["id"]))
    assert result["changed"] is True and result["created"] is True and result["copied_back"] and result["region"] == SRC, result
    assert_return_contract("snapshot_restore", result)
    assert_return_contract("snapshot_restore", preview)
    assert_return_contract("snapshot_copy_info", listed)
    (volume,) = moto_server.client("ec2", SRC).describe_volumes(VolumeIds=[result["volume_id"]])["Volumes"]
    assert volume["AvailabilityZone"] == "eu-west-1c" and volume["Size"] == 3 and volume["VolumeType"] == "gp3"
    pv, pvc = result["persistent_volume"], result["persistent_volume_claim"]
    kubernetes_validate.validate(pv, K8S, strict=True)
    kubernetes_validate.validate(pvc, K8S, strict=True)
    assert pv["spec"]["csi"] == {"driver": "ebs.csi.aws.com", "volumeHandle": result["volume_id"], "fsType": "ext4"}
    assert "awsElasticBlockStore" not in json.dumps(pv)
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["eu-west-1c"]
    assert pvc["metadata"] == {"name": "data-db-0", "namespace": "shop"} and pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pv["spec"]["storageClassName"] == "" and "labels" not in pv["metadata"]
    assert moto.SECRET_KEY not in json.dumps(result)

    again = run_module("snapshot_restore", restore_args(moto_server, copy["id"]))
    assert again["changed"] is False and again["volume_id"] == result["volume_id"] and again["created"] is False, again


def test_restore_in_the_snapshots_own_region_with_chosen_names(moto_server, replicated):
    (copy,) = run_module("snapshot_copy_info", moto_server.auth(region=DST, pvc_name="data-db-0"))["snapshots"]
    result = run_module("snapshot_restore", moto_server.auth(region=DST, snapshot_id=copy["id"], availability_zone="eu-central-1a",
                                                             pvc_name="data-db-restored", pvc_namespace="shop-dr", storage_class="gp3-retain",
                                                             labels={"app": "db"}, wait_sleep=0.01))
    assert result["changed"] is True and result["copied_back"] is None, result
    for manifest in (result["persistent_volume"], result["persistent_volume_claim"]):
        kubernetes_validate.validate(manifest, K8S, strict=True)
        assert manifest["spec"]["storageClassName"] == "gp3-retain" and manifest["metadata"]["labels"] == {"app": "db"}


@pytest.mark.parametrize("bad, expected", [
    (dict(availability_zone="eu-central-1a"), "not a zone of eu-west-1"),
    (dict(snapshot_id="snap-0000000000000dead"), "Failed to find snapshot snap-0000000000000dead in eu-central-1"),
    (dict(region="eu-wast-1"), "no such region"),
    (dict(pvc_name="Data_DB"), "is not a Kubernetes name"),
])
def test_bad_restore_input(moto_server, replicated, bad, expected):
    (copy,) = run_module("snapshot_copy_info", moto_server.auth(region=DST, pvc_name="data-db-0"))["snapshots"]
    result = run_module("snapshot_restore", restore_args(moto_server, bad.pop("snapshot_id", copy["id"]), **bad))
    assert result.get("failed") and expected in result["msg"], result


def test_a_snapshot_that_names_no_claim_needs_pvc_name(moto_server, replicated):
    copies = run_module("snapshot_copy_info", moto_server.auth(region=DST))["snapshots"]
    (bare,) = [c for c in copies if c["pvc_name"] is None]
    result = run_module("snapshot_restore", restore_args(moto_server, bare["id"]))
    assert result.get("failed") and "set pvc_name and pvc_namespace" in result["msg"] and result["volume_id"], result
