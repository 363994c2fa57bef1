# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The ibm_vpc source adapter against the VPC emulator subprocess: the real ibm-vpc SDK, real loop devices.

Each test has its own emulator (``vpc_emulator_factory``); "nothing leaked" is read from the emulator's state:
the volumes, attachments and snapshots a run made are gone and no loop device is left.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import

MIB = 1024 * 1024
ATTEMPTS = 4  # max_retries=3 in Bed.adapter: one call and three retries
REGION, ZONE = "us-south", "us-south-1"
DATA = (b"vpc-adapter-bytes" * 4096)[: 2 * MIB].ljust(2 * MIB, b"\x07")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the VPC emulator's attachments are loop devices: they need root and a free /dev/loopN")


class Bed:
    """An emulator with a server ``web01`` (2 MiB of DATA on its boot volume) and a conversion host in the same zone."""

    def __init__(self, emu):
        self.emu = emu
        self.host = emu.seed_instance(REGION, name="conversion-host", zone=ZONE)["id"]
        inst = emu.seed_instance(REGION, name="web01", zone=ZONE, boot_capacity=10, profile="bx2-2x8")
        self.instance = inst
        self.boot = inst["boot_volume_attachment"]["volume"]["id"]
        emu.write_volume(self.boot, DATA)

    def adapter(self, **vpc):
        settings = dict(api_key=self.emu.api_key_for_tests, region=REGION, endpoint=self.emu.service_url(REGION), iam_url=self.emu.iam_url,
                        by_id_dir=self.emu.by_id_path, max_retries=3, retry_interval=0.05)
        settings.update(vpc)
        return _providers.source({"provider": "ibm_vpc", "ibm_vpc": settings, "wait_timeout": 20, "wait_sleep": 0.05})

    def counts(self):
        state = self.emu.state()
        return {k: state["records"].get(k, 0) for k in ("volume", "volume_attachment", "snapshot")}, state["loop_devices"]


@pytest.fixture
def bed(vpc_emulator_factory):  # noqa: F811 pylint: disable=redefined-outer-name
    return Bed(vpc_emulator_factory(delay=0.05))


def _snapshot(bed, adapter=None):
    snap, changed = (adapter or bed.adapter()).snapshot_create(bed.boot, server="web01")
    assert changed is True
    return snap


def test_server_info_names_boot_volume_profile_zone_and_latest_snapshot(bed):
    adapter = bed.adapter()
    info = adapter.server_info("web01")
    assert info["id"] == bed.instance["id"] and info["zone"] == ZONE and info["profile"] == "bx2-2x8"
    boot = info["boot_volume"]
    assert boot["id"] == bed.boot and boot["size"] == 10 * 1024 ** 3 and boot["profile"] == "general-purpose" and boot["zone"] == ZONE
    os_name = (adapter.call("read", "volume", "get_volume", bed.boot).get("operating_system") or {}).get("name")
    assert os_name and info["os"] == boot["os"] == os_name and info["latest_snapshot"] is None
    snap = _snapshot(bed, adapter)
    latest = adapter.server_info("web01")["latest_snapshot"]
    assert latest["name"] == snap["name"] and latest["os"] == os_name


def test_unknown_server_name_is_a_clear_error(bed):
    with pytest.raises(ReplicationError, match="Failed to find server ghost01: no instance of that name in region us-south; check the name"):
        bed.adapter().server_info("ghost01")


def test_snapshot_is_stable_and_tagged_and_listed(bed):
    adapter = bed.adapter()
    snap = _snapshot(bed, adapter)
    raw = adapter.call("read", "snapshot", "get_snapshot", snap["id"])
    tags = dict(t.split(":", 1) for t in raw["user_tags"])
    assert raw["lifecycle_state"] == "stable" and tags["created-by"] == _naming.CREATED_BY and tags["source-server"] == "web01"
    assert _naming.format_time(tags["snapshot-time"]) == snap["snapshot_time"]
    listed = adapter.snapshot_list(server="web01")
    assert [s["id"] for s in listed] == [snap["id"]] and listed[0]["status"] == "stable" and listed[0]["volume"] == bed.boot
    again, changed = adapter.snapshot_create(bed.boot, server="web01", name=snap["name"])
    assert changed is False and again["id"] == snap["id"]


def test_attach_reads_the_snapshot_bytes_through_the_device_id_link_then_leaves_nothing(bed):
    adapter = bed.adapter()
    snap = _snapshot(bed, adapter)
    before, loops = bed.counts()
    bed.emu.write_volume(bed.boot, b"\x01" * MIB)  # the attached volume holds the snapshot's bytes, not today's
    att, changed = adapter.volume_attach(snap["name"], bed.host)
    try:
        assert changed is True and att["host"] == bed.host
        raw = adapter.call("read", "attachment", "get_instance_volume_attachment", bed.host, att["attachment_id"])
        assert att["device"] == os.path.join(bed.emu.by_id_path, "virtio-" + raw["device"]["id"][:20])
        assert os.path.realpath(att["device"]).startswith("/dev/loop")
        with open(att["device"], "rb") as handle:
            assert handle.read(2 * MIB) == DATA
    finally:
        adapter.volume_detach(att)
    assert bed.counts() == (before, loops)
    assert not os.listdir(bed.emu.by_id_path)


def test_conversion_host_in_another_zone_is_refused_and_nothing_is_made(bed):
    adapter = bed.adapter()
    snap = _snapshot(bed, adapter)
    far = bed.emu.seed_instance(REGION, name="far-host", zone="us-south-3")
    before = bed.counts()
    with pytest.raises(ReplicationError) as info:
        adapter.volume_attach(snap["name"], "far-host")
    assert "in zone us-south-3, the volume in us-south-1; use a conversion host in zone us-south-1" in info.value.msg
    assert far["id"] and bed.counts() == before


# Each step of volume_attach made to fail in turn: the volume and attachment the run made are removed.
STEP_FAULTS = {
    "volume create refused": lambda emu: emu.inject("POST", r"/v1/volumes$", 400, code="bad_field"),
    "volume ends failed": lambda emu: emu.fail_next("volume"),
    "attach refused": lambda emu: emu.inject("POST", r"/volume_attachments$", 409, code="conflict"),
    "attachment unreadable": lambda emu: emu.inject("GET", r"/volume_attachments/[^/]+$", 500, count=ATTEMPTS),
    "volume quota": lambda emu: emu.set_quota("volume", 2),  # the two boot volumes: no room for one more
}


@pytest.mark.parametrize("step", sorted(STEP_FAULTS))
def test_a_failure_at_each_attach_step_leaks_nothing(bed, step):
    adapter = bed.adapter()
    snap = _snapshot(bed, adapter)
    before = bed.counts()
    STEP_FAULTS[step](bed.emu)
    with pytest.raises(ReplicationError) as info:
        adapter.volume_attach(snap["name"], bed.host)
    assert info.value.msg.startswith("Failed to attach a volume from snapshot %s" % snap["name"])
    if step == "volume quota":
        assert "quota" in info.value.msg and "delete unused resources or ask IBM Cloud support" in info.value.msg
    bed.emu.set_quota("volume", None)
    assert bed.counts() == before
    assert not os.listdir(bed.emu.by_id_path)


def test_device_link_that_never_appears_times_out_and_leaks_nothing(bed, tmp_path):
    snap = _snapshot(bed)
    before = bed.counts()
    empty = tmp_path / "other-by-id"
    empty.mkdir()
    adapter = bed.adapter(by_id_dir=str(empty))
    adapter.params["wait_timeout"] = 1
    with pytest.raises(ReplicationError, match="device link .*virtio-0717-.* still absent after 1s"):
        adapter.volume_attach(snap["name"], bed.host)
    assert bed.counts() == before


def test_detach_that_fails_is_finished_by_the_next_detach(bed):
    adapter = bed.adapter()
    snap = _snapshot(bed, adapter)
    before = bed.counts()
    att, _unused = adapter.volume_attach(snap["name"], bed.host)
    bed.emu.inject("DELETE", r"/volume_attachments/", 500, count=ATTEMPTS)
    with pytest.raises(ReplicationError, match="kept answering HTTP 500"):
        adapter.volume_detach(att)
    assert bed.counts() != before
    detached, changed = bed.adapter().volume_detach({"snapshot": snap["name"], "host": bed.host})
    assert changed is True and detached["device"] is None and bed.counts() == before


def test_failed_snapshot_is_removed(bed):
    adapter = bed.adapter()
    before = bed.counts()
    bed.emu.fail_next("snapshot")
    with pytest.raises(ReplicationError, match="became failed"):
        adapter.snapshot_create(bed.boot, server="web01")
    assert bed.counts() == before


def test_wrong_api_key_is_a_clear_error_without_the_key(bed):
    wrong = "wrongKey-Zq7Xv2Lm9Pp4"
    with pytest.raises(ReplicationError) as info:
        bed.adapter(api_key=wrong).server_info("web01")
    msg = info.value.msg
    assert "check ibm_vpc.api_key" in msg and wrong not in msg and wrong not in repr(vars(info.value))
    assert bed.emu.api_key_for_tests not in msg


def test_token_expiring_mid_wait_is_renewed(vpc_emulator_factory):  # noqa: F811 pylint: disable=redefined-outer-name
    emu = vpc_emulator_factory(delay=3.0, token_seconds=2)
    bed = Bed(emu)
    issued = emu.state()["tokens_issued"]
    snap = _snapshot(bed)  # pending for 3 s, longer than a token lives
    assert snap["status"] == "stable" and emu.state()["tokens_issued"] >= issued + 2


def test_429_with_retry_after_and_5xx_are_retried(bed):
    bed.emu.inject("GET", r"/v1/instances$", 429, count=2, retry_after=1)
    bed.emu.inject("GET", r"/v1/volumes/", 503, count=2)
    info = bed.adapter().server_info("web01")
    assert info["boot_volume"]["id"] == bed.boot
    seen = [tuple(r[:3]) for r in bed.emu.control("GET", "/requests")["requests"]]
    assert sum(1 for r in seen if r[0] == "GET" and r[1].endswith("/v1/instances") and r[2] == 429) == 2
    assert sum(1 for r in seen if r[0] == "GET" and "/v1/volumes/" in r[1] and r[2] == 503) == 2


def test_retries_that_run_out_are_a_clear_error(bed):
    bed.emu.inject("GET", r"/v1/instances$", 503, count=10)
    with pytest.raises(ReplicationError, match="kept answering HTTP 503 .* after every retry.*ibm_vpc.max_retries"):
        bed.adapter(max_retries=1).server_info("web01")


def test_the_modules_drive_the_adapter_through_the_provider_seam(bed):
    """server_info -> snapshot -> snapshot_info -> volume_attach present/absent, as the role calls them (provider: ibm_vpc)."""
    from tests.harness import run_module

    vpc = dict(api_key=bed.emu.api_key_for_tests, region=REGION, endpoint=bed.emu.service_url(REGION), iam_url=bed.emu.iam_url,
               by_id_dir=bed.emu.by_id_path, max_retries=3, retry_interval=0.05)
    common = dict(provider="ibm_vpc", ibm_vpc=vpc)
    waits = {}  # snapshot and volume_attach take no wait options (the adapter's defaults: 1800 s, a look every 2 s)
    before = bed.counts()
    server = run_module("server_info", dict(common, server="web01"))
    assert server["changed"] is False and server["server"]["boot_volume"]["id"] == bed.boot, server
    snap = run_module("snapshot", dict(common, volume=bed.boot, server="web01"))  # the module has no wait options: default sleeps
    assert snap.get("changed") is True and snap["snapshot"]["server"] == "web01", snap
    listed = run_module("snapshot_info", dict(common, server="web01"))
    assert [s["name"] for s in listed["snapshots"]] == [snap["snapshot"]["name"]]
    attached = run_module("volume_attach", dict(common, snapshot=snap["snapshot"]["name"], host=bed.host, **waits))
    assert attached.get("changed") is True, attached
    with open(attached["attachment"]["device"], "rb") as handle:
        assert handle.read(2 * MIB) == DATA
    detached = run_module("volume_attach", dict(common, snapshot=snap["snapshot"]["name"], host=bed.host, state="absent",
                                                attachment=attached["attachment"], **waits))
    assert detached.get("changed") is True and bed.counts()[0]["volume"] == before[0]["volume"], detached
    text = json.dumps([server, snap, listed, attached, detached])
    assert bed.emu.api_key_for_tests not in text
