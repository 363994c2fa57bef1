"""Pure logic of _qemu and _files (no Ansible), plus the few qemu-img calls that need no module."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _files, _qemu
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


@pytest.mark.parametrize("data, percent, rest", [
    (b"    (0.00/100%)\r    (1.90/100%)\r", 1.9, b"\r"),
    (b"    (45.71/100%)\r    (47.6", 45.71, b"\r    (47.6"),
    (b"    (100.00/100%)\r\n", 100.0, b"\r\n"),
    (b"    (12", None, b"    (12"),
    (b"", None, b""),
])
def test_parse_progress(data, percent, rest):
    assert _qemu.parse_progress(data) == (percent, rest)


def test_parse_progress_across_chunks():
    first, rest = _qemu.parse_progress(b"    (3.81/100%)\r    (5.")
    second, _rest = _qemu.parse_progress(rest + b"71/100%)\r")
    assert (first, second) == (3.81, 5.71)


def test_convert_command_defaults():
    args = _qemu.convert_command("/dev/vdb", "raw", "/x/o.qcow2.partial", "qcow2", True, "zstd", 8, True, "none")
    assert args == ["convert", "-p", "-f", "raw", "-O", "qcow2", "-t", "none", "-m", "8", "-W", "-c",
                    "-o", "compression_type=zstd", "/dev/vdb", "/x/o.qcow2.partial"]


def test_convert_command_uncompressed_and_other_formats():
    plain = _qemu.convert_command("s", "qcow2", "d", "qcow2", False, "zlib", 1, False, "writeback")
    assert "-c" not in plain and "-W" not in plain and "-o" not in plain and plain[plain.index("-t") + 1] == "writeback"
    raw = _qemu.convert_command("s", "raw", "d", "raw", True, "zlib", 8, True, "none")
    assert "-c" not in raw and "-o" not in raw
    vpc = _qemu.convert_command("s", "raw", "d", "vpc", True, "zlib", 8, True, "none")
    assert vpc[vpc.index("-o") + 1] == "force_size=on" and "-c" not in vpc


def test_free_space_error_names_numbers_and_directory():
    _qemu.check_free_space(100, "/srv", 100)
    with pytest.raises(ReplicationError) as info:
        _qemu.check_free_space(3 << 30, "/srv/export", 1 << 30)
    msg = info.value.msg
    assert msg.startswith("Failed to convert disk into /srv/export: not enough free space")
    assert "3221225472 bytes (3072.0 MiB)" in msg and "1073741824 bytes (1024.0 MiB) are free" in msg
    assert info.value.details == dict(required_bytes=3 << 30, free_bytes=1 << 30, directory="/srv/export")


PARAMS = dict(src="/s.img", format="qcow2", compress=True, compression_type="zlib")


def test_identity_ignores_options_that_do_not_change_the_output():
    base = _qemu._identity(dict(PARAMS, coroutines=8, cache="none"), "raw")
    assert base == _qemu._identity(dict(PARAMS, coroutines=1, cache="writeback"), "raw")
    assert base != _qemu._identity(dict(PARAMS, compression_type="zstd"), "raw")
    assert base != _qemu._identity(dict(PARAMS, compress=False), "raw")
    assert base != _qemu._identity(PARAMS, "qcow2")
    # compression settings mean nothing for raw output
    assert _qemu._identity(dict(PARAMS, format="raw"), "raw") == _qemu._identity(dict(PARAMS, format="raw", compression_type="zstd"), "raw")


def test_up_to_date(tmp_path):
    dest = tmp_path / "o.qcow2"
    dest.write_bytes(b"x")
    ident = _qemu._identity(PARAMS, "raw")
    record = dict(version=_qemu.SIDECAR_VERSION, identity=ident, source_fingerprint="1-2-3", dest_fingerprint=_files.fingerprint(str(dest)))
    assert _qemu.up_to_date(record, ident, "1-2-3", str(dest))
    assert not _qemu.up_to_date(record, ident, "1-2-4", str(dest))  # source changed
    assert not _qemu.up_to_date(record, ident, None, str(dest))  # block device: no identity
    assert not _qemu.up_to_date(None, ident, "1-2-3", str(dest))
    assert not _qemu.up_to_date(dict(record, version=0), ident, "1-2-3", str(dest))
    assert not _qemu.up_to_date(record, dict(ident, compression_type="zstd"), "1-2-3", str(dest))
    dest.write_bytes(b"xy")  # output changed behind our back
    assert not _qemu.up_to_date(record, ident, "1-2-3", str(dest))
    dest.unlink()
    assert not _qemu.up_to_date(record, ident, "1-2-3", str(dest))


def test_fingerprint_and_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a" * 5000)
    first = _files.fingerprint(str(path))
    size, _mtime, inode = first.split("-")
    assert size == "5000" and int(inode) == os.stat(path).st_ino
    assert _files.sha256_file(str(path), buffer_size=1024) == hashlib.sha256(b"a" * 5000).hexdigest()
    os.utime(path, ns=(1, 1))
    assert _files.fingerprint(str(path)) != first
    assert _files.fingerprint("/dev/null") is None


def test_json_roundtrip_and_remove(tmp_path):
    path = str(tmp_path / "r.json")
    assert _files.read_json(path) is None
    _files.write_json(path, {"a": 1})
    assert _files.read_json(path) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]
    (tmp_path / "bad.json").write_text("[1")
    assert _files.read_json(str(tmp_path / "bad.json")) is None
    assert _files.remove(path) is True and _files.remove(path) is False


def test_measure_is_an_upper_bound_of_the_real_output(tmp_path):
    src = str(tmp_path / "s.raw")
    subprocess.run(["qemu-img", "create", "-f", "raw", src, "32M"], check=True, capture_output=True)
    with open(src, "r+b") as handle:
        handle.seek(4 << 20)
        handle.write(os.urandom(3 << 20))  # incompressible: the worst case for the bound
    for fmt in _qemu.FORMATS:
        dest = str(tmp_path / ("o." + fmt))
        required = _qemu.measure(src, "raw", fmt, _qemu.output_options(fmt, True, "zlib"))
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt] + (["-c"] if fmt == "qcow2" else []) + [src, dest],
                       check=True, capture_output=True)
        used = os.stat(dest).st_blocks * 512
        assert used <= required, (fmt, used, required)


def test_source_info_detects_and_rejects(tmp_path):
    src = str(tmp_path / "s.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", src, "16M"], check=True, capture_output=True)
    assert _qemu.source_info(src) == ("qcow2", 16 << 20)
    with pytest.raises(ReplicationError, match="unknown src_format 'nope'"):
        _qemu.source_info(src, "nope")


def test_resolve_cache():
    assert _qemu.resolve_cache("auto", "qcow2", True) == "writeback"
    assert _qemu.resolve_cache(None, "qcow2", True) == "writeback"
    assert _qemu.resolve_cache("auto", "qcow2", False) == "none"
    assert _qemu.resolve_cache("auto", "raw", True) == "none"
    assert _qemu.resolve_cache("none", "qcow2", True) == "none"
    assert _qemu.resolve_cache("unsafe", "raw", False) == "unsafe"
