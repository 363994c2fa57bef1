"""Provider openstack through the modules: bad input named, check mode, idempotent re-runs, Cinder's revert rules, and a
crash-consistent Cinder snapshot (libvirt's test driver) whose thaw is proven when Cinder refuses the snapshot.

Cinder and Nova are the emulator of tests/emulators/openstack_server.py behind the session's real Keystone."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _consistency
from tests.unit.providers.conftest import openstack_source

pytestmark = pytest.mark.xdist_group("openstack")
MIB = 1024 * 1024


@pytest.fixture
def cloud(request, tmp_path):
    return openstack_source(tmp_path, request)


def _args(cloud, **extra):
    return dict({"provider": "openstack", "openstack": cloud.settings()}, **extra)


def _seed(cloud, name="web01", data=b"first state " * 1000):
    cloud.make_server(name, data)
    return cloud.boot[name]


def _no_secret(cloud, result):
    assert cloud.cloud.password not in json.dumps(result)


def test_bad_input_is_named(cloud, module_runner, monkeypatch, tmp_path):
    _seed(cloud)
    cloud.emu.seed_server("twin")
    cloud.emu.seed_server("twin")
    missing = module_runner("server_info", _args(cloud, server="ghost01"))
    assert missing["failed"] and missing["msg"].startswith("Failed to find server ghost01: no server of that name in Nova"), missing
    twins = module_runner("server_info", _args(cloud, server="twin"))
    assert twins["failed"] and "2 servers have that name" in twins["msg"], twins
    prefix = module_runner("server_info", _args(cloud, server="web0"))  # Nova's name filter is a regex: web0 would match web01
    assert prefix["failed"] and "no server of that name" in prefix["msg"], prefix
    wrong = module_runner("server_info", _args(cloud, server="web01", openstack=dict(cloud.settings(), auth=cloud.cloud.auth("not-the-password"))))
    assert wrong["failed"] and "check the credentials" in wrong["msg"], wrong
    _no_secret(cloud, wrong)
    assert "not-the-password" not in json.dumps(wrong)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", cloud.cloud.clouds_yaml)
    unknown = module_runner("server_info", _args(cloud, server="web01", openstack={"cloud": "nosuchcloud", "region_name": "RegionOne"}))
    assert unknown["failed"] and "add cloud nosuchcloud to clouds.yaml" in unknown["msg"], unknown
    by_cloud = module_runner("server_info", _args(cloud, server="web01", openstack={"cloud": "peer", "region_name": "RegionOne"}))
    assert by_cloud["server"]["boot_volume"]["size"] == 1024 ** 3 and by_cloud["server"]["boot_volume"]["fingerprint"] is None
    _no_secret(cloud, by_cloud)


def test_snapshot_module_check_mode_idempotence_and_delete(cloud, module_runner):
    boot = _seed(cloud)
    args = _args(cloud, volume=boot, server="web01", name="web01-manual")
    planned = module_runner("snapshot", args, check_mode=True)
    assert planned["changed"] is True and planned["snapshot"]["name"] == "web01-manual" and not cloud.emu.cloud.snapshots
    made = module_runner("snapshot", args)
    assert made["changed"] is True and made["snapshot"]["server"] == "web01" and made["snapshot"]["created_by"] == "vmimage.replication"
    (record,) = cloud.emu.cloud.snapshots.values()
    assert record["metadata"]["source-server"] == "web01" and record["status"] == "available"
    again = module_runner("snapshot", args)
    assert again["changed"] is False and again["snapshot"]["id"] == made["snapshot"]["id"] and len(cloud.emu.cloud.snapshots) == 1
    listed = module_runner("snapshot_info", _args(cloud, server="web01"))
    assert [s["name"] for s in listed["snapshots"]] == ["web01-manual"] and listed["changed"] is False
    gone = module_runner("snapshot", _args(cloud, name="web01-manual", state="absent"), check_mode=True)
    assert gone["changed"] is True and len(cloud.emu.cloud.snapshots) == 1
    assert module_runner("snapshot", _args(cloud, name="web01-manual", state="absent"))["changed"] is True
    assert module_runner("snapshot", _args(cloud, name="web01-manual", state="absent"))["changed"] is False
    cloud.emu.cloud.settle(wait=True)
    assert not cloud.emu.cloud.snapshots


def test_revert_takes_only_the_latest_snapshot_and_reads_back_its_bytes(cloud, module_runner):
    boot = _seed(cloud, data=b"A" * MIB)
    first = module_runner("snapshot", _args(cloud, volume=boot, server="web01", name="web01-a"))["snapshot"]
    cloud.write_volume("web01", b"B" * MIB)
    module_runner("snapshot", _args(cloud, volume=boot, server="web01", name="web01-b"))
    cloud.write_volume("web01", b"C" * MIB)
    cloud.detach("web01")
    older = module_runner("snapshot", _args(cloud, name="web01-a", state="restored"))
    assert older["failed"] and "only to its latest snapshot, and web01-b is newer" in older["msg"], older
    planned = module_runner("snapshot", _args(cloud, name="web01-b", state="restored"), check_mode=True)
    assert planned["changed"] is True and cloud.read_volume("web01")[:MIB] == b"C" * MIB
    done = module_runner("snapshot", _args(cloud, name="web01-b", state="restored"))
    assert done["changed"] is True and done["snapshot"]["restored_volume"]["id"] == boot
    assert cloud.read_volume("web01")[:MIB] == b"B" * MIB
    assert module_runner("snapshot", _args(cloud, name="web01-b", state="restored"))["changed"] is False
    # once the older one is the latest, it can be reverted to
    assert module_runner("snapshot", _args(cloud, name="web01-b", state="absent"))["changed"] is True
    cloud.emu.cloud.settle(wait=True)
    assert module_runner("snapshot", _args(cloud, name=first["name"], state="restored"))["changed"] is True
    assert cloud.read_volume("web01")[:MIB] == b"A" * MIB


def test_volume_attach_module_check_mode_idempotence_and_detach(cloud, module_runner):
    boot = _seed(cloud, data=b"D" * MIB)
    snap = module_runner("snapshot", _args(cloud, volume=boot, server="web01", name="web01-s"))["snapshot"]
    args = _args(cloud, snapshot=snap["name"], host="conversion-host")
    planned = module_runner("volume_attach", args, check_mode=True)
    assert planned["changed"] is True and planned["attachment"]["device"] is None and len(cloud.emu.cloud.volumes) == 2
    made = module_runner("volume_attach", args)
    device = made["attachment"]["device"]
    assert made["changed"] is True and os.path.basename(device) == "virtio-" + made["attachment"]["volume_id"][:20]
    with open(device, "rb") as handle:
        assert handle.read(MIB) == b"D" * MIB
    again = module_runner("volume_attach", args)
    assert again["changed"] is False and again["attachment"]["device"] == device
    off = dict(args, state="absent", attachment=made["attachment"])
    assert module_runner("volume_attach", off, check_mode=True)["changed"] is True and os.path.exists(device)
    assert module_runner("volume_attach", off)["changed"] is True and not os.path.exists(device)
    assert module_runner("volume_attach", off)["changed"] is False
    cloud.emu.cloud.settle(wait=True)
    assert len(cloud.emu.cloud.volumes) == 2 and cloud.emu.leftovers() == {"loops": [], "links": []}
    missing = module_runner("volume_attach", dict(args, host="no-such-host"))
    assert missing["failed"] and missing["msg"].startswith("Failed to find conversion host no-such-host"), missing


@pytest.fixture
def guest(cloud, tmp_path):
    """A libvirt test-driver guest whose disk is web01's Cinder volume file."""
    libvirt = pytest.importorskip("libvirt")
    from tests.unit.plugins.module_utils.test__consistency import NODE, Recorder

    boot = _seed(cloud, data=b"G" * MIB)
    node = tmp_path / "node.xml"
    node.write_text(NODE % cloud.emu.volume_path(boot))
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open("test://%s" % node)
    rec = Recorder(conn.lookupByName("web01"))
    rec.conn, rec.boot = conn, boot
    yield rec
    conn.close()


def test_crash_consistent_cinder_snapshot_thaws_on_success_and_when_cinder_refuses(cloud, guest, module_runner, monkeypatch):
    from tests.unit.plugins.module_utils.test__consistency import NoClose, thawed

    monkeypatch.setattr(_consistency, "open_domain", lambda uri, name: (NoClose(guest.conn), guest))
    frozen_during = []
    real_freeze = guest.fsFreeze

    def freeze(mountpoints=None, flags=0):
        done = real_freeze(mountpoints, flags)
        frozen_during.append(len(cloud.emu.cloud.snapshots))  # no snapshot yet when the guest is frozen
        return done
    monkeypatch.setattr(guest, "fsFreeze", freeze)
    args = _args(cloud, volume=guest.boot, server="web01", consistency="required", domain="web01", libvirt_uri="test:///unused", max_frozen=30)
    res = module_runner("snapshot", dict(args, name="web01-frozen"))
    assert res["changed"] is True and res["consistency"]["state"] == "frozen" and res["consistency"]["frozen_count"] == 2, res
    assert frozen_during == [0] and [c[0] for c in guest.calls] == ["freeze", "thaw"] and thawed(guest.real)

    guest.calls.clear()
    cloud.emu.inject("POST", r"^/volume/snapshots$", 413, "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded")
    refused = module_runner("snapshot", dict(args, name="web01-refused"))
    assert refused["failed"] and "Maximum number of snapshots allowed" in refused["msg"], refused
    assert [c[0] for c in guest.calls] == ["freeze", "thaw"] and thawed(guest.real)
    assert sorted(s["name"] for s in cloud.emu.cloud.snapshots.values()) == ["web01-frozen"]
    _no_secret(cloud, refused)


@pytest.fixture
def ceph(cloud):
    if cloud.cloud.ceph is None:
        pytest.skip("Ceph is not installed here (hack/bootstrap.sh installs it)")
    return cloud.cloud.ceph


def _direct(cloud, ceph, user="vmimage", **openstack):
    options = dict(cloud.settings(), direct_snapshot={"ceph_conf": ceph.conf, "ceph_user": user}, **openstack)
    return _args(cloud, openstack=options)


def _ceph_server(cloud, ceph, name="web01", data=b"R" * MIB):
    cloud.boot[name] = cloud.emu.seed_server(name, data, ceph=ceph)["boot_volume"]
    return cloud.boot[name]


def _clean_ceph(ceph, boot):
    """The images pool holds nothing, the volume's RBD image no snapshot."""
    return ceph.images("images") == {} and ceph.images("volumes").get("volume-%s" % boot) == []


def test_direct_snapshot_clones_in_ceph_and_glance_records_only_the_location(cloud, ceph, module_runner):
    boot = _ceph_server(cloud, ceph)
    args = dict(_direct(cloud, ceph), volume=boot, server="web01", name="web01-direct")
    made = module_runner("snapshot", args)
    assert not made.get("failed"), made["msg"]
    assert made["changed"] is True and made["snapshot"]["direct"] == "rbd" and made["snapshot"]["volume"] == boot, made
    image_id = made["snapshot"]["id"]
    assert ceph.images("images") == {image_id: ["snap"]} and ceph.images("volumes")["volume-%s" % boot] == []
    assert not cloud.emu.cloud.snapshots  # no Cinder snapshot: the standard path was not taken
    conn = cloud.cloud.connect("RegionOne")
    try:
        locations = conn.image.get("/images/%s/locations" % image_id).json()
    finally:
        conn.close()
    assert [loc["url"] for loc in locations] == ["rbd://%s/images/%s/snap" % (ceph.fsid, image_id)], locations
    again = module_runner("snapshot", args)
    assert again["changed"] is False and again["snapshot"]["id"] == image_id
    listed = module_runner("snapshot_info", _args(cloud, server="web01", volume=boot))
    assert [s["name"] for s in listed["snapshots"]] == ["web01-direct"]
    # The conversion host reads it through a Cinder volume made from the image: Glance reads it from Ceph.
    attach = _args(cloud, snapshot="web01-direct", host="conversion-host")
    attached = module_runner("volume_attach", attach)
    with open(attached["attachment"]["device"], "rb") as handle:
        assert handle.read(MIB) == b"R" * MIB
    assert module_runner("volume_attach", dict(attach, state="absent"))["changed"] is True
    restore = module_runner("snapshot", _args(cloud, name="web01-direct", state="restored"))
    assert restore["failed"] and "direct snapshot of volume %s" % boot in restore["msg"], restore
    assert module_runner("snapshot", _args(cloud, name="web01-direct", state="absent"))["changed"] is True
    assert _clean_ceph(ceph, boot)  # Glance's rbd store removed the clone with the image


def test_direct_snapshot_falls_back_where_it_is_not_allowed(cloud, ceph, module_runner):
    boot = _ceph_server(cloud, ceph)
    # The Ceph user may not write the images pool (the seed's "no write permission on storage pool images").
    readonly = module_runner("snapshot", dict(_direct(cloud, ceph, user="vmimage-ro"), volume=boot, server="web01", name="web01-ro"))
    assert readonly["changed"] is True and readonly["snapshot"]["direct"] is None, readonly
    assert "Operation not permitted" in readonly["snapshot"]["direct_fallback"], readonly["snapshot"]
    assert [s["name"] for s in cloud.emu.cloud.snapshots.values()] == ["web01-ro"] and _clean_ceph(ceph, boot)
    # Glance lets only services add an rbd location: an operator's snapshot takes the standard path.
    operator = cloud.cloud.auth()
    operator.update(username="operator", password=cloud.cloud.operator_password)
    refused = module_runner("snapshot", dict(_direct(cloud, ceph, auth=operator), volume=boot, server="web01", name="web01-op"))
    assert refused["changed"] is True and "Glance refused the location (HTTP 403" in refused["snapshot"]["direct_fallback"], refused
    assert cloud.cloud.operator_password not in json.dumps(refused)
    assert _clean_ceph(ceph, boot)
    conn = cloud.cloud.connect("RegionOne")
    try:
        assert [i.name for i in conn.image.images()] == []
    finally:
        conn.close()
    # A volume that is not in Ceph at all.
    plain = _seed(cloud, name="plain01")
    other = module_runner("snapshot", dict(_direct(cloud, ceph), volume=plain, server="plain01", name="plain01-s"))
    assert other["changed"] is True and "is not an RBD image of pool volumes" in other["snapshot"]["direct_fallback"], other


def test_a_direct_snapshot_that_fails_after_the_clone_removes_the_clone_then_the_volumes_snapshot(
        cloud, ceph, module_runner, monkeypatch, tmp_path):
    """flatten fails with the clone made: the clone (a child of the volume's snapshot) goes first, then that snapshot, and the
    standard path is taken; a direct image of another volume under the same name is refused."""
    boot = _ceph_server(cloud, ceph)
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    (wrapper / "rbd").write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = flatten ] && { echo "rbd: flatten error: (5) Input/output error" >&2; '
                                 'exit 5; }; done\nexec %s "$@"\n' % shutil.which("rbd"))
    (wrapper / "rbd").chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (wrapper, os.environ["PATH"]))
    failed = module_runner("snapshot", dict(_direct(cloud, ceph), volume=boot, server="web01", name="web01-flat"))
    assert failed["changed"] is True and "flatten error" in failed["snapshot"]["direct_fallback"], failed
    assert _clean_ceph(ceph, boot) and [s["name"] for s in cloud.emu.cloud.snapshots.values()] == ["web01-flat"]
    monkeypatch.undo()
    other = _ceph_server(cloud, ceph, name="web02")
    module_runner("snapshot", dict(_direct(cloud, ceph), volume=other, server="web02", name="web02-direct"))
    clash = module_runner("snapshot", dict(_direct(cloud, ceph), volume=boot, server="web01", name="web02-direct"))
    assert clash["failed"] and "already exists of another volume" in clash["msg"], clash
