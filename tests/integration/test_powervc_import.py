# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/powervc_import.yml through ansible_runner.run(), as a management application drives it.

The PowerVC host is a real sshd on 127.0.0.4, entered as a non-root user made for the tests (removed after),
with the stand-in powervc-image; the OVA goes to a real S3
server (rclone) from that host, and the PowerVS emulator imports it from there. The run's events carry the
phases and the import job's progress before the run ends; the final status and the new image id are read
from the run. Failures at each step end with a message naming the cause, the session directory removed,
no multipart upload left and the workspace's catalog unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _sealed
from tests.emulators.powervs import PowerVSEmulator
from tests.peers import sshd
from tests.peers.powervc_host import HostUser, PowerVCHost
from tests.peers.runner import ROOT, run_playbook

PLAYBOOK = os.path.join(ROOT, "playbooks", "powervc_import.yml")
API_KEY = "pvsApiKey-Ru4Tz8QwLm2XcV9bN3sKd7Hj"
PASSWORD = "pvcPassw0rd-Mx7Lq2Zr"
PHASES = ["validate", "export", "upload", "import", "cleanup"]


@pytest.fixture(scope="module")
def pvc_user():
    if os.geteuid() != 0:
        pytest.skip("making the PowerVC host's non-root user needs root")
    user = HostUser()
    yield user
    user.remove()


@pytest.fixture(scope="module")
def pvc_ssh(pvc_user):
    """sshd on 127.0.0.4 for the non-root user; its files are in the user's home, which the user can reach (pytest's are root's)."""
    root = os.path.join(pvc_user.home, "sshd")
    os.makedirs(root, mode=0o755)
    server = sshd.start(root, host="127.0.0.4", user=pvc_user.name)
    os.chmod(os.path.join(root, "authorized_keys"), 0o644)  # sshd reads it as the user
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pvs(s3_rclone):
    with PowerVSEmulator(API_KEY, {s3_rclone.region: s3_rclone.endpoint}, queued_seconds=0.5, running_seconds=2.5, progress_steps=5) as emulator:
        yield emulator


class Run:
    def __init__(self, ssh, s3, emulator, tmp_path, user):
        self.s3, self.emulator, self.tmp_path = s3, emulator, tmp_path
        self.host = PowerVCHost(os.path.join(user.home, "pvc-%s" % uuid.uuid4().hex[:8]), PASSWORD, python=sshd.host_python())
        user.give(self.host.root)
        self.venv = user.venv(sshd.host_python())
        self.ws = emulator.add_workspace(region="us-south", storage_types=("tier1", "tier3"))
        self.bucket = s3.make_bucket("pvc-%s" % uuid.uuid4().hex[:12])
        self.inventory = {"all": {"children": {"powervc": {"hosts": {"pvc1": ssh.inventory_vars()}}}}}

    def extravars(self, **extra):
        value = dict(
            powervc_host_image="test-IMG", powervc_host_rc_file=self.host.rc_file, powervc_host_powervc_command=self.host.command,
            powervc_host_powervc_password=PASSWORD, powervc_host_sessions_dir=self.host.sessions,
            powervc_host_venv=self.venv, powervc_host_margin_mb=1,
            powervc_host_cos=self.s3.cos(), powervc_host_bucket=self.bucket, powervc_host_storage_type="tier1", powervc_host_os_type="aix",
            powervc_host_powervs=dict(workspace_id=self.ws.id, crn=self.ws.crn, url=self.emulator.url, iam_url=self.emulator.url, api_key=API_KEY,
                                      retry_interval=0.2),
            powervc_host_poll_wait=0.3, powervc_host_import_timeout=120,
        )
        value.update(extra)
        return value

    def run(self, envvars=None, keep_command=False, **extra):
        private = str(self.tmp_path / ("runner-%s" % uuid.uuid4().hex[:6]))
        os.makedirs(private)
        result = run_playbook(PLAYBOOK, self.inventory, extravars=self.extravars(**extra), envvars=envvars, private_dir=private,
                              keep_command=keep_command)
        result.private_dir = private
        return result

    def uploads(self):
        client = self.s3.client()
        try:
            return client.list_multipart_uploads(Bucket=self.bucket).get("Uploads") or []
        except client.exceptions.NoSuchUpload:  # rclone's answer when there is none
            return []

    def objects(self):
        return [o["Key"] for o in self.s3.client().list_objects_v2(Bucket=self.bucket).get("Contents") or []]


@pytest.fixture
def bed(pvc_ssh, s3_rclone, pvs, tmp_path, pvc_user):
    run = Run(pvc_ssh, s3_rclone, pvs, tmp_path, pvc_user)
    yield run
    shutil.rmtree(run.host.root, ignore_errors=True)


def _phase_order(run):
    seen = []
    for event in run.events:
        task = (event.get("event_data") or {}).get("task") or ""
        phase = task.split(":", 1)[0].lower()
        if event.get("event") == "playbook_on_task_start" and phase in PHASES and phase not in seen:
            seen.append(phase)
    return seen


def _stats(run):
    for event in run.events:
        if event.get("event") == "playbook_on_stats":
            return (event.get("event_data") or {}).get("artifact_data") or {}
    return {}


def test_import_through_ansible_runner_with_sealed_credentials(bed):
    blob, key = _sealed.seal({"cos": bed.s3.cos(), "powervs": {"api_key": API_KEY}})
    powervs = bed.extravars()["powervc_host_powervs"]
    del powervs["api_key"]
    # A job that runs long enough for several polls even on a loaded machine (the others keep the short default).
    bed.emulator.running_seconds, bed.emulator.progress_steps = 10.0, 10
    try:
        run = bed.run(envvars={_sealed.KEY_ENV: key}, keep_command=True, powervc_host_cos={}, powervc_host_sealed_cos=blob, powervc_host_powervs=powervs)
    finally:
        bed.emulator.running_seconds, bed.emulator.progress_steps = 2.5, 5
    assert run.status == "successful", run.stdout[-3000:]
    assert _phase_order(run) == PHASES
    # The import job's progress arrived as events, before the run ended.
    counters = {e["event"]: e.get("counter") for e in run.events if e.get("event") == "playbook_on_stats"}
    progress = [(e["counter"], (e["event_data"].get("res") or {}).get("progress") or {}) for e in run.events
                if e.get("event") in ("runner_retry", "runner_on_ok") and (e.get("event_data") or {}).get("task") == "Import: progress of the job"]
    running = [p for c, p in progress if p.get("state") == "running"]
    assert running and all(c < counters["playbook_on_stats"] for c, _unused in progress), progress
    assert len({p.get("percent") for p in running}) >= 2 and all("message" in p for p in running)
    stats = _stats(run)["powervc_import"]
    image = next(iter(bed.ws.images.values()))
    assert stats["status"] == "successful" and stats["image_id"] == image["imageID"] and stats["image_name"].startswith("test-IMG-")
    assert os.listdir(bed.host.sessions) == [] and bed.uploads() == [] and bed.objects() == []  # keep_ova=false
    assert _sealed.scrub(run.private_dir, key)  # ansible-runner wrote the environment to artifacts/<id>/command
    text = run.stdout + json.dumps(run.events)
    for secret in (bed.s3.secret_access_key, API_KEY, PASSWORD, key):
        assert secret not in text
    for root, _dirs, files in os.walk(run.private_dir):
        for name in files:
            assert key.encode() not in open(os.path.join(root, name), "rb").read()


@pytest.mark.parametrize("case", ["wrong_rc", "not_exportable", "job_fails", "tampered_blob"])
def test_failure_at_each_step_cleans_up(bed, case):
    extra, envvars, expected, phase = {}, None, None, None
    if case == "wrong_rc":
        extra, expected, phase = dict(powervc_host_rc_file=str(bed.tmp_path / "missing-rc")), "does not exist; set rc_file", "validate"
    elif case == "not_exportable":
        extra, expected, phase = dict(powervc_host_image="locked-IMG"), "not exportable", "validate"
    elif case == "job_fails":
        # The COS keys from the controller's environment (as an AWX credential injects them) reach the upload on the PowerVC host.
        cos = bed.s3.cos()
        envvars = {"COS_ENDPOINT": cos["endpoint"], "COS_REGION": cos["region"], "COS_HMAC_ACCESS_KEY_ID": cos["access_key_id"],
                   "COS_HMAC_SECRET_ACCESS_KEY": cos["secret_access_key"]}
        bed.emulator.fail_import = "not enough capacity in storage pool"
        extra, expected, phase = dict(powervc_host_cos={}), "not enough capacity in storage pool", "import"
    elif case == "tampered_blob":
        blob, key = _sealed.seal(bed.s3.cos())
        cut = blob[:-6] + ("AAAAAA" if not blob.endswith("AAAAAA") else "BBBBBB")
        extra, envvars, expected, phase = dict(powervc_host_cos={}, powervc_host_sealed_cos=cut), {_sealed.KEY_ENV: key}, "does not verify", "validate"
    run = bed.run(envvars=envvars, **extra)
    assert run.status == "failed"
    failures = [e["event_data"] for e in run.events if e.get("event") == "runner_on_failed" and not e["event_data"].get("ignore_errors")]
    text = json.dumps([f.get("res", {}).get("msg") for f in failures])
    assert expected in text, text
    stats = _stats(run).get("powervc_import") or {}
    if case != "tampered_blob":
        assert stats.get("status") == "failed" and stats.get("phase", "").lower() == phase, stats
    assert os.listdir(bed.host.sessions) == [] and bed.uploads() == [] and bed.objects() == []
    assert bed.ws.images == {}
    assert bed.s3.secret_access_key not in run.stdout + json.dumps(run.events) and PASSWORD not in run.stdout
    if case == "job_fails":
        assert bed.emulator.import_bodies[-1]["accessKey"] == bed.s3.access_key_id  # uploaded and imported with the environment's keys


def test_cleanup_playbook_removes_what_an_interrupted_import_left(bed):
    stale, fresh, venv = (os.path.join(bed.host.sessions, n) for n in ("test-IMG-20260101-000000-1", "test-IMG-now-2", "venv"))
    for path in (stale, fresh, venv):
        os.makedirs(path)
    now = time.time()
    os.utime(stale, (now - 600, now - 600))
    os.utime(venv, (now - 600, now - 600))
    os.utime(fresh, (now + 3600, now + 3600))
    key = "images/test-IMG/test-IMG-20260101-000000.ova"
    client = bed.s3.client()
    client.create_multipart_upload(Bucket=bed.bucket, Key=key)
    made = {"created-by": "vmimage.replication", "format": "ova"}
    objects = {  # key -> metadata; of test-IMG the newest two stay, other-IMG's one OVA stays, what the collection did not make stays
        "images/test-IMG/test-IMG-20260102-000000.ova": dict(made, **{"source-server": "test-IMG", "snapshot-time": "2026-01-02T00:00:00Z"}),
        "images/test-IMG/test-IMG-20260103-000000.ova": dict(made, **{"source-server": "test-IMG", "snapshot-time": "2026-01-03T00:00:00Z"}),
        "images/test-IMG/test-IMG-20260104-000000.ova": dict(made, **{"source-server": "test-IMG", "snapshot-time": "2026-01-04T00:00:00Z"}),
        "images/test-IMG/test-IMG-20260105-000000.ova": dict(made, **{"source-server": "test-IMG", "snapshot-time": "2026-01-05T00:00:00Z"}),
        "images/other-IMG/other-IMG-20250101-000000.ova": dict(made, **{"source-server": "other-IMG", "snapshot-time": "2025-01-01T00:00:00Z"}),
        "images/test-IMG/by-hand-20250101.ova": {"format": "ova", "source-server": "test-IMG", "snapshot-time": "2025-01-01T00:00:00Z"},
        "images/test-IMG/test-IMG-20250101-000000.qcow2": dict(made, format="qcow2", **{"source-server": "test-IMG", "snapshot-time": "2025-01-01T00:00:00Z"}),
    }
    for name, metadata in objects.items():
        client.put_object(Bucket=bed.bucket, Key=name, Body=b"ova", Metadata=metadata)
    time.sleep(2)
    vars_ = dict(powervc_host_sessions_dir=bed.host.sessions, powervc_host_venv=venv, powervc_host_cleanup_older_than=1,
                 powervc_host_bucket=bed.bucket, powervc_host_cos=bed.s3.cos(), powervc_host_ova_keep_last=2, powervc_host_ova_keep_days=30)
    check = run_playbook(os.path.join(ROOT, "playbooks", "cleanup.yml"), bed.inventory, extravars=vars_, cmdline="--check")
    assert check.status == "successful" and sorted(bed.objects()) == sorted(objects), check.stdout[-3000:]
    run = run_playbook(os.path.join(ROOT, "playbooks", "cleanup.yml"), bed.inventory, extravars=vars_)
    assert run.status == "successful", run.stdout[-3000:]
    assert sorted(os.listdir(bed.host.sessions)) == ["test-IMG-now-2", "venv"] and bed.uploads() == []
    gone = {"images/test-IMG/test-IMG-20260102-000000.ova", "images/test-IMG/test-IMG-20260103-000000.ova"}
    assert sorted(bed.objects()) == sorted(set(objects) - gone)


def test_check_mode_validates_and_changes_nothing(bed):
    private = str(bed.tmp_path / "runner-check")
    os.makedirs(private)
    run = run_playbook(PLAYBOOK, bed.inventory, extravars=bed.extravars(), private_dir=private, cmdline="--check")
    assert run.status == "successful", run.stdout[-3000:]
    assert "validate" in _phase_order(run)
    assert os.listdir(bed.host.sessions) == [] and bed.objects() == [] and bed.ws.images == {} and not [c for c in bed.host.calls() if c[0] == "export"]
