# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/cleanup.yml's VPC play (module vpc_cleanup) through ansible-runner against the VPC emulator subprocess:
what a killed run left (a temporary volume attached to the conversion host, a failed snapshot) is removed by the
collection's tags, and a failed import of a server by its name; untagged volumes and snapshots and the collection's stable snapshots are never touched."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc
from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import
from tests.peers import runner

REGION, ZONE = "us-south", "us-south-1"
PLAYBOOK = os.path.join(runner.ROOT, "playbooks", "cleanup.yml")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the VPC emulator's attachments are loop devices: they need root and a free /dev/loopN")


class Site:
    def __init__(self, emu, tmp_path):
        self.emu, self.tmp_path, self.runs = emu, tmp_path, 0
        self.host = emu.seed_instance(REGION, name="conversion-host", zone=ZONE)["id"]
        inst = emu.seed_instance(REGION, name="web01", zone=ZONE)
        self.boot = inst["boot_volume_attachment"]["volume"]["id"]
        emu.write_volume(self.boot, b"\x07" * 1024 * 1024)
        self.vpc = dict(region=REGION, endpoint=emu.service_url(REGION), iam_url=emu.iam_url, max_retries=2, retry_interval=0.05,
                        by_id_dir=emu.by_id_path, wait_sleep=0.2)

    def adapter(self):
        return _providers.source({"provider": "ibm_vpc", "ibm_vpc": dict(self.vpc, api_key=self.emu.api_key_for_tests),
                                  "wait_timeout": 20, "wait_sleep": 0.05})

    def run(self, check=False, older_than=0):
        self.runs += 1
        private = self.tmp_path / ("run-%d" % self.runs)
        private.mkdir()
        inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}, "vars": {
            "replication_vpc_cleanup_region": REGION, "replication_vpc_cleanup_options": {"ibm_vpc": self.vpc},
            "replication_vpc_cleanup_servers": ["web01"], "replication_cleanup_older_than": older_than,
            "replication_vpc_cleanup_wait_sleep": 0.05}}}
        return runner.run_playbook(PLAYBOOK, inventory, envvars={"IC_API_KEY": self.emu.api_key_for_tests},
                                   cmdline="--check" if check else None, private_dir=str(private))

    def names(self):
        adapter = self.adapter()
        return {"volumes": sorted(v["name"] for v in adapter.pages("l", "list_volumes", "volumes")),
                "snapshots": sorted(s["name"] for s in adapter.snapshots()),
                "images": sorted(i["name"] for i in adapter.pages("l", "list_images", "images", visibility="private")),
                "attachments": self.emu.state()["records"].get("volume_attachment", 0)}


def removed(run):
    return run.custom_stats()["vmimage_vpc_cleanup"]


@pytest.fixture
def site(vpc_emulator_factory, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    return Site(vpc_emulator_factory(delay=0.02), tmp_path)


def test_cleanup_removes_only_the_collections_leftovers(site):
    adapter = site.adapter()
    kept_snapshot, _unused = adapter.snapshot_create(site.boot, server="web01", name="web01-20260101-000000")
    attached, _unused = adapter.volume_attach(kept_snapshot["name"], site.host)  # the killed run's temporary volume, attached
    site.emu.fail_next("snapshot")
    adapter.call("snapshot", "snapshot", "create_snapshot", {"source_volume": {"id": site.boot}, "name": "web01-20260102-000000",
                                                             "user_tags": vpcc.tags(source_server="web01", snapshot_time="20260102T000000Z")})
    adapter.call("snapshot", "snapshot", "create_snapshot", {"source_volume": {"id": site.boot}, "name": "by-hand"})
    site.emu.seed_volume(REGION, "by-hand-volume", zone=ZONE)
    for name in ("web01-20260103-000000", "other-20260103-000000"):  # a killed import of web01 and someone else's image
        adapter.call("import", "image", "create_image", {"name": name, "file": {"href": "cos://us-south/missing-bucket/%s.qcow2" % name},
                                                         "operating_system": {"name": "debian-12-amd64"}})
    before = site.names()
    assert "web01-20260101-000000-conv" in before["volumes"] and "web01-20260102-000000" in before["snapshots"]

    young = site.run(older_than=86400)
    assert young.status == "successful", young.stdout
    assert removed(young)["volumes"] == [] and site.names() == before

    check = site.run(check=True)
    assert check.status == "successful", check.stdout
    assert removed(check)["volumes"] == ["web01-20260101-000000-conv"] and removed(check)["snapshots"] == ["web01-20260102-000000"]
    assert removed(check)["images"] == ["web01-20260103-000000"]
    assert site.names() == before

    real = site.run()
    assert real.status == "successful", real.stdout
    assert removed(real)["volumes"] == ["web01-20260101-000000-conv"] and removed(real)["snapshots"] == ["web01-20260102-000000"]
    assert removed(real)["kept"] == ["snapshot web01-20260101-000000"] and removed(real)["images"] == ["web01-20260103-000000"]
    after = site.names()
    assert "web01-20260101-000000-conv" not in after["volumes"] and "by-hand-volume" in after["volumes"]
    assert after["snapshots"] == ["by-hand", "web01-20260101-000000"] and after["images"] == ["other-20260103-000000"]
    assert after["attachments"] == before["attachments"] - 1 and site.emu.state()["loop_devices"] == []
    assert not os.path.exists(attached["device"])
    assert site.emu.api_key_for_tests not in real.stdout and site.emu.api_key_for_tests not in str(real.events)

    again = site.run()
    assert again.status == "successful" and removed(again)["volumes"] == [] and removed(again)["snapshots"] == []
