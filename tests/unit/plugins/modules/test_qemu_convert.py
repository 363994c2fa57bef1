"""qemu_convert against the real qemu-img, with real ext4 disk images filled with real files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness import final_result, spawn_module

from ansible_collections.vmimage.replication.plugins.module_utils import _progress, _qemu
from tests.contract import assert_return_contract

ROOT = Path(__file__).resolve().parents[4]
SAMPLE = [sys.executable, str(ROOT / "hack" / "sample_disk.py")]


def qemu_json(*args):
    return json.loads(subprocess.run(["qemu-img"] + list(args) + ["--output=json"] if args[0] == "info" else ["qemu-img"] + list(args),
                                     check=True, capture_output=True).stdout)


def same_content(src, src_fmt, dest, dest_fmt):
    return subprocess.run(["qemu-img", "compare", "-f", src_fmt, "-F", dest_fmt, src, dest], capture_output=True, check=False).returncode == 0


def test_auto_cache_bypasses_the_page_cache_for_aligned_writes(module_runner, disk, tmp_path):
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), compress=False)
    assert result["changed"] and result["cache"] == "none"
    assert same_content(disk, "raw", str(tmp_path / "o.qcow2"), "qcow2")


@pytest.fixture(scope="module")
def master_disk(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("disk") / "master.img")
    subprocess.run(SAMPLE + [path, "--size", "64M", "--fill", "0.4"], check=True, capture_output=True)
    return path


@pytest.fixture
def disk(master_disk, tmp_path):
    """A private copy of the sample disk (tests change it)."""
    path = str(tmp_path / "web01.img")
    subprocess.run(["cp", "--sparse=always", master_disk, path], check=True)
    return path


def convert(module_runner, src, dest, check_mode=False, **options):
    args = dict(src=src, dest=dest)
    args.update(options)
    return module_runner("qemu_convert", args, check_mode=check_mode)


def test_default_conversion_is_compressed_qcow2_equal_to_source(module_runner, disk, tmp_path):
    dest = str(tmp_path / "out" / "web01.qcow2")
    os.makedirs(os.path.dirname(dest))
    progress = str(tmp_path / "progress.json")
    result = convert(module_runner, disk, dest, progress_file=progress)
    assert_return_contract("qemu_convert", result)
    assert result["changed"] is True
    assert same_content(disk, "raw", dest, "qcow2")
    info = qemu_json("info", dest)
    assert info["format"] == "qcow2"
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    assert qemu_json("check", "--output=json", dest)["compressed-clusters"] > 0
    assert result["sha256"] == hashlib.sha256(Path(dest).read_bytes()).hexdigest()
    assert result["stored_size"] == os.path.getsize(dest) < result["virtual_size"] == os.path.getsize(disk)
    assert result["compression_ratio"] > 1
    # auto: compressed QCOW2 is written through the page cache and flushed with fsync
    assert result["verified"] == "check" and result["cache"] == "writeback" and result["src_format"] == "raw"
    assert sorted(os.listdir(os.path.dirname(dest))) == ["web01.qcow2", "web01.qcow2.vmimage.json"]
    record = _progress.read(progress)
    assert record["state"] == "finished" and record["done"] == record["total"] == result["virtual_size"]


def test_zstd_is_really_used(module_runner, disk, tmp_path):
    dest = str(tmp_path / "z.qcow2")
    result = convert(module_runner, disk, dest, compression_type="zstd", verify="compare")
    assert result["changed"] and result["verified"] == "compare" and result["compression_type"] == "zstd"
    assert qemu_json("info", dest)["format-specific"]["data"]["compression-type"] == "zstd"
    assert same_content(disk, "raw", dest, "qcow2")


@pytest.mark.parametrize("fmt", ["raw", "vpc"])
def test_other_formats(module_runner, disk, tmp_path, fmt):
    dest = str(tmp_path / ("out." + fmt))
    result = convert(module_runner, disk, dest, format=fmt, verify="compare")
    assert_return_contract("qemu_convert", result)
    assert result["compression_type"] is None and result["verified"] == "compare"
    info = qemu_json("info", dest)
    assert info["format"] == fmt and info["virtual-size"] == os.path.getsize(disk)
    assert same_content(disk, "raw", dest, fmt)


def test_qcow2_source_is_detected(module_runner, disk, tmp_path):
    middle = str(tmp_path / "mid.qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", disk, middle], check=True)
    result = convert(module_runner, middle, str(tmp_path / "out.qcow2"), compress=False)
    assert result["src_format"] == "qcow2" and result["compression_type"] is None
    assert same_content(disk, "raw", str(tmp_path / "out.qcow2"), "qcow2")


def test_check_mode_then_real_then_idempotent(module_runner, disk, tmp_path):
    dest = str(tmp_path / "out" / "web01.qcow2")
    os.makedirs(os.path.dirname(dest))
    checked = convert(module_runner, disk, dest, check_mode=True)
    assert_return_contract("qemu_convert", checked)
    assert checked["changed"] is True and os.listdir(os.path.dirname(dest)) == []
    real = convert(module_runner, disk, dest)
    assert real["changed"] is True
    # The local disk it needs is said up front (check mode) and bounds what it wrote.
    assert checked["required_bytes"] == real["required_bytes"] >= real["stored_size"] > 0
    mtime = os.stat(dest).st_mtime_ns
    again_check = convert(module_runner, disk, dest, check_mode=True)
    again = convert(module_runner, disk, dest)
    assert again_check["changed"] is False and again["changed"] is False
    assert_return_contract("qemu_convert", again)
    assert again["sha256"] == real["sha256"] and again["stored_size"] == real["stored_size"] and again["required_bytes"] is None
    assert os.stat(dest).st_mtime_ns == mtime


def test_reconverts_when_source_options_or_dest_change(module_runner, disk, tmp_path):
    dest = str(tmp_path / "web01.qcow2")
    first = convert(module_runner, disk, dest)
    subprocess.run(SAMPLE + [disk, "--change"], check=True, capture_output=True)
    assert convert(module_runner, disk, dest, check_mode=True)["changed"] is True
    second = convert(module_runner, disk, dest)
    assert second["changed"] is True and second["sha256"] != first["sha256"]
    assert same_content(disk, "raw", dest, "qcow2")
    assert convert(module_runner, disk, dest, compression_type="zstd")["changed"] is True
    assert convert(module_runner, disk, dest, compression_type="zstd", coroutines=2, verify="none")["changed"] is False
    with open(dest, "ab") as handle:  # someone touched the output
        handle.write(b"\0" * 512)
    assert convert(module_runner, disk, dest, compression_type="zstd")["changed"] is True
    assert convert(module_runner, disk, dest, compression_type="zstd", force=True)["changed"] is True


def test_absent_removes_output_sidecar_and_partial(module_runner, disk, tmp_path):
    dest = str(tmp_path / "web01.qcow2")
    convert(module_runner, disk, dest)
    Path(dest + ".partial").write_bytes(b"stale")
    args = dict(dest=dest, state="absent")
    assert module_runner("qemu_convert", args, check_mode=True)["changed"] is True
    assert os.path.exists(dest)
    result = module_runner("qemu_convert", args)
    assert_return_contract("qemu_convert", result)
    assert result["changed"] is True and sorted(os.listdir(tmp_path)) == ["web01.img"]
    assert module_runner("qemu_convert", args)["changed"] is False


def test_stale_partial_is_replaced(module_runner, disk, tmp_path):
    dest = str(tmp_path / "web01.qcow2")
    Path(dest + ".partial").write_bytes(b"left by a killed run" * 1000)
    assert convert(module_runner, disk, dest)["changed"] is True
    assert not os.path.exists(dest + ".partial") and same_content(disk, "raw", dest, "qcow2")


def test_cache_falls_back_where_o_direct_is_missing(module_runner, disk, tmp_path, monkeypatch):
    # This kernel's tmpfs accepts O_DIRECT, so the probe's answer is replaced; the fallback path itself is real.
    monkeypatch.setattr(_qemu, "direct_io_supported", lambda directory: False)
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), cache="none")
    assert result["changed"] and result["cache"] == "writeback"
    assert "does not support O_DIRECT" in json.dumps(result["warnings"])  # 2.19 returns structured warnings
    assert same_content(disk, "raw", str(tmp_path / "o.qcow2"), "qcow2")


def test_block_device_is_raw_and_always_converted(module_runner, disk, tmp_path, attach_loop):
    device = attach_loop(disk, read_only=True)
    dest = str(tmp_path / "dev.qcow2")
    first = convert(module_runner, device, dest)
    assert first["changed"] and first["src_format"] == "raw" and first["virtual_size"] == os.path.getsize(disk)
    assert same_content(disk, "raw", dest, "qcow2")
    # no cheap identity for a block device's content: every run converts (check mode says so too)
    assert convert(module_runner, device, dest, check_mode=True)["changed"] is True
    assert convert(module_runner, device, dest)["changed"] is True


def test_block_device_holding_a_qcow2_header_is_not_probed(module_runner, disk, tmp_path, attach_loop):
    """A guest controls its disk's bytes: a qcow2 header there must not make qemu-img follow it."""
    inner = str(tmp_path / "inner.qcow2")
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", disk, inner], check=True)
    device = attach_loop(inner, read_only=True)
    result = convert(module_runner, device, str(tmp_path / "o.qcow2"))
    assert result["src_format"] == "raw" and result["virtual_size"] == os.path.getsize(inner)


def test_direct_io_probe_leaves_nothing(tmp_path):
    assert _qemu.direct_io_supported(str(tmp_path)) in (True, False)
    assert os.listdir(tmp_path) == []


# ---- failure paths: each error names what to fix, and nothing is left behind ----

def test_missing_source(module_runner, tmp_path):
    result = convert(module_runner, str(tmp_path / "nope.img"), str(tmp_path / "o.qcow2"))
    assert result["failed"] and "Failed to read source disk %s: it does not exist" % (tmp_path / "nope.img") in result["msg"]
    assert os.listdir(tmp_path) == []


def test_unknown_src_format(module_runner, disk, tmp_path):
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), src_format="bogus")
    assert result["failed"] and "unknown src_format 'bogus'" in result["msg"]


def test_wrong_src_format(module_runner, disk, tmp_path):
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), src_format="qcow2")
    assert result["failed"] and result["msg"].startswith("Failed to inspect source disk %s:" % disk)
    assert sorted(os.listdir(tmp_path)) == ["web01.img"]


def test_missing_dest_directory(module_runner, disk, tmp_path):
    result = convert(module_runner, disk, str(tmp_path / "no" / "o.qcow2"))
    assert result["failed"] and "does not exist; create it first" in result["msg"]


def test_missing_qemu_img_names_the_package(module_runner, disk, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"))
    assert result["failed"] and "qemu-utils on Debian/Ubuntu" in result["msg"] and "qemu-img on RHEL" in result["msg"]


def test_bad_coroutines(module_runner, disk, tmp_path):
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), coroutines=64)
    assert result["failed"] and "coroutines must be between 1 and 16" in result["msg"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.parametrize("where", ["file", "directory"])
def test_unreadable_source(master_disk, where):
    """As an unprivileged user: an unreadable file, and a file in a directory the user may not enter."""
    top = tempfile.mkdtemp(prefix="qemu-perm-", dir="/tmp")  # pytest's tmp dirs are private (0700)
    try:
        os.chmod(top, 0o755)
        inner = os.path.join(top, "inner")
        os.mkdir(inner, 0o700 if where == "directory" else 0o755)
        disk = os.path.join(inner, "web01.img")
        shutil.copyfile(master_disk, disk)
        os.chmod(disk, 0o600 if where == "file" else 0o644)
        code = ("from ansible_collections.vmimage.replication.plugins.module_utils import _qemu, _errors\n"
                "try:\n    _qemu.check_source(%r)\nexcept _errors.ReplicationError as exc:\n    print(exc.msg)\n") % disk
        # The unprivileged user may not reach the checkout (a parent such as /root can be 0700):
        # it imports a world-readable copy of module_utils staged next to the disk.
        stage = os.path.join(top, "collections")
        shutil.copytree(str(ROOT / "plugins" / "module_utils"),
                        os.path.join(stage, "ansible_collections", "vmimage", "replication", "plugins", "module_utils"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for base, dirs, files in os.walk(stage):
            os.chmod(base, 0o755)
            for name in files:
                os.chmod(os.path.join(base, name), 0o644)
        env = dict(PYTHONPATH=stage, PATH="/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1")
        out = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, env=env, check=False,
                             preexec_fn=lambda: os.setuid(65534))
        assert "Failed to read source disk %s: permission denied; run the task with become" % disk in out.stdout, out.stderr
    finally:
        shutil.rmtree(top)


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the pure check is tested in test__qemu.py)")
    yield str(mount)
    subprocess.run(["umount", str(mount)], check=True)


def test_not_enough_space_names_numbers_and_directory(module_runner, disk, tiny_fs):
    dest = os.path.join(tiny_fs, "o.qcow2")
    for check_mode in (True, False):
        result = convert(module_runner, disk, dest, check_mode=check_mode)
        assert result["failed"] and "Failed to convert disk into %s: not enough free space" % tiny_fs in result["msg"]
        assert result["free_bytes"] < result["required_bytes"] and result["directory"] == tiny_fs
        assert "replication_work_dir" in result["msg"]
        assert os.listdir(tiny_fs) == []


def test_killed_conversion_leaves_no_partial(tmp_path):
    """SIGTERM (as a cancelled job sends) in the middle of a slow conversion: qemu-img stops, no partial stays."""
    disk = str(tmp_path / "big.img")
    subprocess.run(SAMPLE + [disk, "--size", "256M", "--fill", "0.5"], check=True, capture_output=True)
    dest, progress = str(tmp_path / "o.qcow2"), str(tmp_path / "p.json")
    args = dict(src=disk, dest=dest, coroutines=1, out_of_order=False, progress_file=progress)
    child = spawn_module("qemu_convert", args, tmp_path)
    while not (os.path.exists(dest + ".partial") and (_progress.read(progress) or {}).get("done")):
        assert child.poll() is None, "conversion ended before it could be interrupted: %s" % final_result(child)
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    result = final_result(child)
    assert result["failed"] and "Failed to convert disk %s: interrupted by SIGTERM" % disk in result["msg"]
    assert not os.path.exists(dest + ".partial") and not os.path.exists(dest)
    assert _progress.read(progress)["state"] == "failed"
    leftover = subprocess.run(["pgrep", "-f", "qemu-img convert.*%s" % dest], capture_output=True, check=False)
    assert leftover.returncode == 1, "qemu-img still running"


def test_cluster_size_is_used_and_part_of_the_identity(module_runner, disk, tmp_path):
    dest = str(tmp_path / "big-clusters.qcow2")
    first = convert(module_runner, disk, dest, cluster_size=262144)
    assert first["changed"] and qemu_json("info", dest)["cluster-size"] == 262144
    assert same_content(disk, "raw", dest, "qcow2")
    assert convert(module_runner, disk, dest, cluster_size=262144)["changed"] is False
    assert convert(module_runner, disk, dest)["changed"] is True  # back to the default size: a different output
    assert qemu_json("info", dest)["cluster-size"] == 65536


@pytest.mark.parametrize("size", [100, 3000, 4 << 20])
def test_bad_cluster_size_is_refused(module_runner, disk, tmp_path, size):
    result = convert(module_runner, disk, str(tmp_path / "o.qcow2"), cluster_size=size)
    assert result["failed"] and "cluster_size must be a power of two" in result["msg"] and disk in result["msg"]
    assert not os.path.exists(str(tmp_path / "o.qcow2"))
