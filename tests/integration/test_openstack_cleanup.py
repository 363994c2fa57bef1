"""playbooks/cleanup.yml's OpenStack play (module openstack_cleanup) through ansible-runner, against the Cinder/Nova
emulator and the real Keystone and Glance: what a killed run left (a temporary volume attached to the conversion host,
a Cinder snapshot in error, a queued snapshot image) is removed by the collection's marks; what carries no mark, and
the collection's available snapshots and active images, are never touched."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.emulators.fixtures import openstack_emulator  # noqa: F401 pylint: disable=unused-import
from tests.integration.test_replicate_openstack import openstack_cloud  # noqa: F401 pylint: disable=unused-import
from tests.peers import runner
from tests.unit.providers.conftest import OpenStackSourcePeer

PLAYBOOK = os.path.join(runner.ROOT, "playbooks", "cleanup.yml")

pytestmark = [pytest.mark.xdist_group("openstack"), pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the OpenStack emulator's attachments are loop devices: they need root and a free /dev/loopN")]


class Request:
    """Enough of pytest's request for the contract peer: its fixtures by name."""

    def __init__(self, **fixtures):
        self.fixtures = fixtures

    def getfixturevalue(self, name):
        return self.fixtures[name]


def _run(peer, tmp_path, check=False, older_than=0):
    private = tmp_path / ("run-%d" % len(list(tmp_path.glob("run-*"))))
    private.mkdir()
    inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}, "vars": {
        "replication_openstack_cleanup": {"cloud": "peer", "region_name": "RegionOne", "wait_sleep": 0.05, "timeout": 60},
        "replication_cleanup_older_than": older_than, "replication_hosts": "nobody", "vmimage_powervc_hosts": "nobody"}}}
    run = runner.run_playbook(PLAYBOOK, inventory, envvars={"OS_CLIENT_CONFIG_FILE": peer.cloud.clouds_yaml},
                              cmdline="--check" if check else None, private_dir=str(private))
    run.assert_nowhere(peer.cloud.password)
    assert run.status == "successful", run.stdout
    return run.custom_stats()["vmimage_openstack_cleanup"]


def _state(peer):
    cloud = peer.emu.cloud
    cloud.settle(wait=True)
    conn = peer.cloud.connect("RegionOne")
    try:
        images = sorted(i.name for i in conn.image.images())
    finally:
        conn.close()
    return {"volumes": sorted(v["name"] for v in cloud.volumes.values()), "snapshots": sorted(s["name"] for s in cloud.snapshots.values()),
            "images": images, **peer.emu.leftovers()}


def test_cleanup_removes_only_the_collections_leftovers(openstack_cloud, openstack_emulator, tmp_path):  # noqa: F811
    peer = OpenStackSourcePeer(Request(openstack_cloud=openstack_cloud, openstack_emulator=openstack_emulator))
    conn = openstack_cloud.connect("RegionOne")
    for image in list(conn.image.images()):  # the session's Glance is shared: this test starts from an empty RegionOne library
        conn.image.delete_image(image, ignore_missing=True)
    peer.make_server("web01", b"\x07" * 1024 * 1024)
    adapter = peer.source()
    kept, _unused = adapter.snapshot_create(peer.boot["web01"], server="web01", name="web01-20260101-000000")
    attached, _unused = adapter.volume_attach(kept["name"], peer.host)  # the killed run's temporary volume, attached
    failed, _unused = adapter.snapshot_create(peer.boot["web01"], server="web01", name="web01-20260102-000000")
    peer.emu.cloud.snapshots[failed["id"]]["status"] = "error"  # Cinder's snapshot failed under the killed run
    foreign = conn.block_storage.create_snapshot(volume_id=peer.boot["web01"], name="by-hand", force=True)
    conn.block_storage.create_volume(name="by-hand-volume", size=1)
    conn.image.create_image(name="web01-20260103-000000", disk_format="raw", container_format="bare",  # a killed createImage
                            **{"created-by": "vmimage.replication", "source-server": "web01", "image_type": "snapshot"})
    conn.image.create_image(name="queued-by-hand", disk_format="raw", container_format="bare")
    conn.close()
    before = _state(peer)
    assert before["loops"] and "web01-20260101-000000-conv" in before["volumes"] and "by-hand" in before["snapshots"], before
    assert foreign.name == "by-hand"

    young = _run(peer, tmp_path, older_than=86400)
    assert young == {"volumes": [], "snapshots": [], "images": [], "kept": []} and _state(peer) == before

    check = _run(peer, tmp_path, check=True)
    assert check["volumes"] == ["web01-20260101-000000-conv"] and check["snapshots"] == ["web01-20260102-000000"], check
    assert check["images"] == ["web01-20260103-000000"] and _state(peer) == before

    real = _run(peer, tmp_path)
    assert real == dict(check, kept=["snapshot web01-20260101-000000"]), real
    after = _state(peer)
    assert after["volumes"] == ["", "", "by-hand-volume"]  # the two boot volumes (seeded without a name) and the operator's
    assert after["snapshots"] == ["by-hand", "web01-20260101-000000"] and after["images"] == ["queued-by-hand"]
    assert after["loops"] == [] and after["links"] == [] and not os.path.exists(attached["device"])

    again = _run(peer, tmp_path)
    assert again == {"volumes": [], "snapshots": [], "images": [], "kept": ["snapshot web01-20260101-000000"]}
    conn = openstack_cloud.connect("RegionOne")
    try:  # the operator's image is this test's: the session's Glance is shared
        for image in list(conn.image.images(name="queued-by-hand")):
            conn.image.delete_image(image)
    finally:
        conn.close()
