"""Provider local beyond the shared contract: its own options, errors, and the loop device it makes and removes."""

from __future__ import annotations

import json
import os

import pytest

from tests.contract import assert_return_contract
from tests.unit.providers.conftest import LocalPeer, _loop_available

from ansible_collections.vmimage.replication.plugins.module_utils import _local_provider, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def test_snapshot_dir_is_required_by_the_adapter_and_named(tmp_path):
    adapter = _providers.source({"provider": "local", "snapshot_dir": None})
    for call in (lambda: adapter.snapshot_create(str(tmp_path / "x.img")), adapter.snapshot_list,
                 lambda: adapter.snapshot_delete("x"), lambda: adapter.volume_attach("x", None)):
        with pytest.raises(ReplicationError) as info:
            call()
        assert "provider local needs the option snapshot_dir" in info.value.msg


def test_server_without_volumes_names_the_option(tmp_path):
    with pytest.raises(ReplicationError, match="set the option volumes"):
        _providers.source({"provider": "local", "volumes": []}).server_info("web01")
    with pytest.raises(ReplicationError, match="bad/name"):
        _providers.source({"provider": "local", "volumes": [str(tmp_path)]}).server_info("bad/name")


def test_modules_without_snapshot_dir_fail_naming_it(module_runner, tmp_path):
    vol = tmp_path / "web01.img"
    vol.write_bytes(b"x" * 4096)
    for module, args in (("snapshot", dict(volume=str(vol))), ("snapshot_info", {}), ("volume_attach", dict(snapshot="web01-1"))):
        res = module_runner(module, args)
        assert res["failed"] and "snapshot_dir" in res["msg"], (module, res)


def test_server_info_module(module_runner, tmp_path):
    peer = LocalPeer(tmp_path)
    peer.make_server("web01", b"\1" * 65536)
    args = dict(server="web01", volumes=[peer.volume_id("web01")], snapshot_dir=peer.snapshot_dir)
    res = module_runner("server_info", args, check_mode=True)
    assert_return_contract("server_info", res)
    assert res["server"]["boot_volume"]["fingerprint"] and res["server"]["latest_snapshot"] is None
    snap = module_runner("snapshot", dict(volume=peer.volume_id("web01"), server="web01", snapshot_dir=peer.snapshot_dir))
    assert_return_contract("snapshot", snap)
    res = module_runner("server_info", args)
    assert res["server"]["latest_snapshot"]["name"] == snap["snapshot"]["name"]
    assert res["server"]["boot_volume"]["fingerprint"] == snap["snapshot"]["fingerprint"]
    missing = module_runner("server_info", dict(args, volumes=[str(tmp_path / "nope.img")]))
    assert missing["failed"] and missing["msg"].startswith("Failed to find server web01") and "nope.img" in missing["msg"]


@pytest.mark.parametrize("loop", [False, True])
def test_volume_attach_module_four_runs(module_runner, tmp_path, loop):
    if loop and not _loop_available():
        pytest.skip("loop devices need root")
    peer = LocalPeer(tmp_path, loop=loop)
    peer.make_server("web01", b"\2" * 65536)
    snap = module_runner("snapshot", dict(volume=peer.volume_id("web01"), server="web01", snapshot_dir=peer.snapshot_dir))["snapshot"]
    args = dict(snapshot=snap["name"], snapshot_dir=peer.snapshot_dir, loop=loop)
    try:
        check = module_runner("volume_attach", args, check_mode=True)
        assert_return_contract("volume_attach", check)
        assert check["changed"] is loop and _local_provider._loops_of(snap["path"]) == []
        res = module_runner("volume_attach", args)
        assert_return_contract("volume_attach", res)
        device = res["attachment"]["device"]
        assert res["changed"] is loop and device.startswith("/dev/loop") is loop and peer.read_device(device, 65536) == b"\2" * 65536
        assert module_runner("volume_attach", args, check_mode=True)["changed"] is False
        assert module_runner("volume_attach", args)["attachment"]["device"] == device
        if loop:
            with pytest.raises(OSError):  # read-only: the snapshot cannot be written through it
                with open(device, "r+b") as handle:
                    handle.write(b"x")
    finally:
        absent = dict(args, state="absent", attachment=res["attachment"]) if "res" in locals() else dict(args, state="absent")
        assert module_runner("volume_attach", absent, check_mode=True)["changed"] is loop
        gone = module_runner("volume_attach", absent)
    assert_return_contract("volume_attach", gone)
    assert gone["changed"] is loop and gone["attachment"]["device"] is None and _local_provider._loops_of(snap["path"]) == []
    assert module_runner("volume_attach", absent)["changed"] is False


def test_loop_is_for_provider_local_only(module_runner):
    res = module_runner("volume_attach", dict(provider="ibm_vpc", snapshot="s1", loop=True))
    assert res["failed"] and "loop applies to provider local only" in res["msg"]


def test_foreign_snapshot_is_refused_by_the_module(module_runner, tmp_path):
    peer = LocalPeer(tmp_path)
    peer.make_server("web01", b"\3" * 4096)
    name = peer.foreign_snapshot("web01")
    res = module_runner("snapshot", dict(snapshot_dir=peer.snapshot_dir, name=name, state="absent"))
    assert res["failed"] and "not made by vmimage.replication" in res["msg"]
    assert os.path.exists(os.path.join(peer.snapshot_dir, name + ".raw"))
    assert json.load(open(os.path.join(peer.snapshot_dir, name + ".snapshot.json"), encoding="utf-8"))["created-by"] == "an operator"
