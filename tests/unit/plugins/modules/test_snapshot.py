"""snapshot / snapshot_info (provider local) against real image files made with qemu-img and sample_disk.py."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract import assert_return_contract

from ansible_collections.vmimage.replication.plugins.module_utils import _files, _local_snapshot

ROOT = Path(__file__).resolve().parents[4]
SAMPLE_DISK = ROOT / "hack" / "sample_disk.py"
SNAP_KEYS = {"name", "id", "path", "volume", "server", "created", "size", "format", "fingerprint", "method"}


def _allocated(path):
    return os.stat(path).st_blocks * 512


@pytest.fixture(scope="module")
def ext4_raw(tmp_path_factory):
    """A real ext4 disk image, 48 MiB virtual, a quarter full of real files, the rest sparse."""
    img = tmp_path_factory.mktemp("disk") / "web01.img"
    subprocess.run([sys.executable, str(SAMPLE_DISK), str(img), "--size", "48M", "--fill", "0.25"], check=True, capture_output=True)
    return img


@pytest.fixture
def raw_volume(ext4_raw, tmp_path):
    vol = tmp_path / "vols" / "web01.img"
    vol.parent.mkdir(exist_ok=True)
    subprocess.run(["cp", "--sparse=always", str(ext4_raw), str(vol)], check=True)
    return vol


@pytest.fixture
def qcow2_volume(ext4_raw, tmp_path):
    vol = tmp_path / "vols" / "db-1.qcow2"
    vol.parent.mkdir(exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(ext4_raw), str(vol)], check=True)
    return vol


def _snap(module_runner, check_mode=False, **args):
    return module_runner("snapshot", args, check_mode=check_mode)


def test_snapshot_raw_is_sparse_identical_and_idempotent(module_runner, raw_volume, tmp_path):
    sdir = str(tmp_path / "snaps")
    check = _snap(module_runner, True, volume=str(raw_volume), snapshot_dir=sdir)
    assert check["changed"] is True and not os.path.exists(sdir)
    res = _snap(module_runner, volume=str(raw_volume), snapshot_dir=sdir)
    assert res["changed"] is True, res
    assert_return_contract("snapshot", res)
    snap = res["snapshot"]
    assert set(snap) == SNAP_KEYS
    assert snap["server"] == "web01" and snap["format"] == "raw" and snap["name"].startswith("web01-")
    assert snap["method"] in ("reflink", "sparse-copy")
    assert snap["created"].endswith("Z") and snap["size"] == 48 << 20
    assert _files.sha256_file(snap["path"]) == _files.sha256_file(raw_volume)
    # allocated blocks of the copy are those of the source, give or take the file system's extent-tree blocks
    assert _allocated(snap["path"]) <= _allocated(raw_volume) + 64 * 1024
    assert _allocated(snap["path"]) < (48 << 20) // 2
    side = json.loads(Path(sdir, snap["name"] + ".snapshot.json").read_text())
    assert side["created-by"] == "vmimage.replication" and side["fingerprint"] == _files.fingerprint(raw_volume)
    assert sorted(os.listdir(sdir)) == sorted([os.path.basename(snap["path"]), snap["name"] + ".snapshot.json"])
    # unchanged volume: no new snapshot, in check mode and for real
    assert _snap(module_runner, True, volume=str(raw_volume), snapshot_dir=sdir)["changed"] is False
    again = _snap(module_runner, volume=str(raw_volume), snapshot_dir=sdir)
    assert again["changed"] is False and again["snapshot"]["name"] == snap["name"]
    info = module_runner("snapshot_info", dict(snapshot_dir=sdir, volume=str(raw_volume)))
    assert_return_contract("snapshot_info", info)
    assert info["changed"] is False and [s["name"] for s in info["snapshots"]] == [snap["name"]]
    assert info["volume_fingerprint"] == snap["fingerprint"]


def test_snapshot_qcow2_named(module_runner, qcow2_volume, tmp_path):
    sdir = str(tmp_path / "snaps")
    res = _snap(module_runner, volume=str(qcow2_volume), snapshot_dir=sdir, name="db-1-before-upgrade", server="db-1.example")
    assert res["changed"] is True
    snap = res["snapshot"]
    assert snap["format"] == "qcow2" and snap["path"].endswith("db-1-before-upgrade.qcow2") and snap["server"] == "db-1.example"
    assert subprocess.run(["qemu-img", "compare", str(qcow2_volume), snap["path"]], capture_output=True, check=False).returncode == 0
    # a named snapshot that exists is left alone, even when the volume changed since
    os.utime(qcow2_volume, ns=(1, 1))
    assert _snap(module_runner, volume=str(qcow2_volume), snapshot_dir=sdir, name="db-1-before-upgrade")["changed"] is False
    # format detection without qemu-img falls back to the magic bytes
    assert _local_snapshot.detect_format(str(qcow2_volume)) == "qcow2"


def test_magic_bytes_when_qemu_img_is_missing(qcow2_volume, raw_volume, monkeypatch):
    monkeypatch.setattr(_local_snapshot.shutil, "which", lambda name: None)
    assert _local_snapshot.detect_format(str(qcow2_volume)) == "qcow2"
    assert _local_snapshot.detect_format(str(raw_volume)) == "raw"


def test_change_during_copy_is_retried_once(raw_volume, tmp_path):
    calls = []

    def writer(pos):  # the guest writes during the first copy only
        if not calls:
            with open(raw_volume, "r+b") as f:
                f.seek(4096)
                f.write(b"guest write")
        calls.append(pos)

    record, changed = _local_snapshot.create(str(raw_volume), str(tmp_path / "s"), reflink=False, on_chunk=writer)
    assert changed and record["fingerprint"] == _files.fingerprint(raw_volume)
    assert _files.sha256_file(record["path"]) == _files.sha256_file(raw_volume)


def test_change_during_every_copy_fails_and_leaves_nothing(raw_volume, tmp_path):
    def writer(pos):
        with open(raw_volume, "ab") as f:
            f.write(b"x")

    sdir = tmp_path / "s"
    with pytest.raises(_local_snapshot.ReplicationError) as err:
        _local_snapshot.create(str(raw_volume), str(sdir), reflink=False, on_chunk=writer)
    assert "changed while it was being copied" in err.value.msg and "freeze the guest" in err.value.msg
    assert os.listdir(sdir) == []


def test_restore_absent_and_check_mode(module_runner, raw_volume, tmp_path):
    sdir = str(tmp_path / "snaps")
    snap = _snap(module_runner, volume=str(raw_volume), snapshot_dir=sdir, name="web01-good")["snapshot"]
    original = _files.sha256_file(raw_volume)
    os.chmod(raw_volume, 0o640)
    subprocess.run([sys.executable, str(SAMPLE_DISK), str(raw_volume), "--change"], check=True, capture_output=True)
    assert _files.sha256_file(raw_volume) != original
    restored_args = dict(snapshot_dir=sdir, name="web01-good", state="restored")
    assert module_runner("snapshot", restored_args, check_mode=True)["changed"] is True
    assert _files.sha256_file(raw_volume) != original
    res = module_runner("snapshot", restored_args)
    assert_return_contract("snapshot", res)
    assert res["changed"] is True and res["snapshot"]["name"] == "web01-good"
    assert _files.sha256_file(raw_volume) == original and stat.S_IMODE(os.stat(raw_volume).st_mode) == 0o640
    assert _allocated(raw_volume) <= _allocated(snap["path"]) + 64 * 1024
    assert sorted(os.listdir(raw_volume.parent)) == ["web01.img"]
    assert module_runner("snapshot", restored_args, check_mode=True)["changed"] is False
    assert module_runner("snapshot", restored_args)["changed"] is False
    # same content under a new inode: compared by content, still no change
    subprocess.run(["cp", "--sparse=always", str(raw_volume), str(raw_volume) + ".new"], check=True)
    os.replace(str(raw_volume) + ".new", raw_volume)
    assert module_runner("snapshot", restored_args)["changed"] is False

    absent = dict(snapshot_dir=sdir, name="web01-good", state="absent")
    assert module_runner("snapshot", absent, check_mode=True)["changed"] is True
    assert len(os.listdir(sdir)) == 2
    assert module_runner("snapshot", absent)["changed"] is True
    assert os.listdir(sdir) == []
    assert module_runner("snapshot", absent, check_mode=True)["changed"] is False
    res = module_runner("snapshot", absent)
    assert res["changed"] is False and res["snapshot"] == {}


def test_errors_name_what_to_fix(module_runner, tmp_path, raw_volume):
    sdir = str(tmp_path / "snaps")
    res = _snap(module_runner, volume=str(tmp_path / "nope.img"), snapshot_dir=sdir)
    assert res["failed"] and "does not exist" in res["msg"] and "nope.img" in res["msg"]
    res = _snap(module_runner, volume=str(tmp_path), snapshot_dir=sdir)
    assert res["failed"] and "is a directory" in res["msg"]
    res = module_runner("snapshot", dict(snapshot_dir=sdir, name="missing", state="restored"))
    assert res["failed"] and "no such snapshot" in res["msg"] and "missing" in res["msg"]
    res = module_runner("snapshot", dict(snapshot_dir=sdir, state="absent"))
    assert res["failed"] and "name" in res["msg"]
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        res = _snap(module_runner, volume=str(raw_volume), snapshot_dir=str(ro))
        assert res["failed"] and "not writable" in res["msg"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _snap(module_runner, volume=str(raw_volume), snapshot_dir=str(blocker))
    assert res["failed"] and "not a directory" in res["msg"]


def test_sparse_copy_skips_zero_blocks(tmp_path):
    src = tmp_path / "src"
    with open(src, "wb") as f:
        f.write(b"\0" * (4 << 20))  # allocated zeros
        f.write(b"data" * 1024)
    dst = tmp_path / "dst"
    assert _local_snapshot.copy_volume(str(src), str(dst), os.path.getsize(src), reflink=False) == "sparse-copy"
    assert dst.read_bytes() == src.read_bytes()
    assert _allocated(dst) < (1 << 20)


@pytest.fixture
def loop_device(ext4_raw, tmp_path, attach_loop):
    """A real block device (loop) over a copy of the ext4 image."""
    backing = tmp_path / "backing.img"
    subprocess.run(["cp", "--sparse=always", str(ext4_raw), str(backing)], check=True)
    return attach_loop(backing)


def test_block_device_snapshot_and_restore(module_runner, loop_device, ext4_raw, tmp_path):
    sdir = str(tmp_path / "snaps")
    res = module_runner("snapshot", dict(volume=loop_device, snapshot_dir=sdir, server="blk1"))
    assert res["changed"] is True, res.get("msg")
    snap = res["snapshot"]
    assert snap["format"] == "raw" and snap["fingerprint"] is None and snap["size"] == 48 << 20 and snap["method"] == "sparse-copy"
    assert _files.sha256_file(snap["path"]) == _files.sha256_file(ext4_raw)
    assert _allocated(snap["path"]) < (48 << 20) // 2
    # a block device has no fingerprint: each run without a name takes a new snapshot
    info = module_runner("snapshot_info", dict(snapshot_dir=sdir, volume=loop_device))
    assert info["volume_fingerprint"] is None and len(info["snapshots"]) == 1
    with open(loop_device, "r+b") as dev:
        dev.seek(1 << 20)
        dev.write(b"\xff" * 4096)
    assert _files.sha256_file(loop_device) != _files.sha256_file(snap["path"])
    args = dict(snapshot_dir=sdir, name=snap["name"], state="restored")
    assert module_runner("snapshot", args, check_mode=True)["changed"] is True
    assert module_runner("snapshot", args)["changed"] is True
    assert _files.sha256_file(loop_device) == _files.sha256_file(snap["path"])
    assert module_runner("snapshot", args)["changed"] is False


def test_cancelled_snapshot_fails_cleanly_and_leaves_no_partial_copy(raw_volume, tmp_path):
    """SIGTERM (a cancelled job) in the middle of the copy: a clear failure, no partial file, no record."""
    sdir = tmp_path / "s"
    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: an xdist worker or an earlier runner may have set one

    def cancel(pos):
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(_local_snapshot.ReplicationError, match="interrupted by SIGTERM"):
        _local_snapshot.create(str(raw_volume), str(sdir), reflink=False, on_chunk=cancel)
    assert os.listdir(sdir) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
