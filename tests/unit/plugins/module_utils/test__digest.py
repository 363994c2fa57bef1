# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The guest digest, recomputed independently from what qemu-img reads out of each image."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _digest, _qcow2, _stream

MIB = 1024 * 1024


def independent(raw_path):
    """docs/data-path.md's definition, in a few lines over a raw file (qemu-img convert -O raw output)."""
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "raw", raw_path], capture_output=True,
                                     text=True, check=True).stdout)["virtual-size"]
    digest = hashlib.sha256(b"vmimage-guest-v1 %d\n" % size)
    with open(raw_path, "rb") as handle:
        for index in range(-(-size // 65536)):
            block = handle.read(65536).ljust(65536, b"\0")
            if block.count(0) != len(block):
                digest.update(struct.pack(">Q", index) + hashlib.sha256(block).digest())
    return digest.hexdigest()


def source(tmp_path, size=9 * MIB + 512):
    path = str(tmp_path / "src.img")
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in [(0, b"boot" * 1000), (3 * MIB + 4096, os.urandom(200000)), (size - 700, b"tail" * 100)]:
            handle.seek(offset)
            handle.write(data)
    return path


def to_raw(image, fmt, tmp_path):
    raw = str(tmp_path / ("back-%s.raw" % os.path.basename(image)))
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", image, raw], check=True, capture_output=True)
    return raw


@pytest.mark.parametrize("cluster_size", [4096, 65536, 2 * MIB])
def test_stream_digest_equals_an_independent_one_over_qemu_img_raw_output(tmp_path, cluster_size):
    src = source(tmp_path)
    size = os.path.getsize(src)
    out = str(tmp_path / "out.qcow2")
    digest = _digest.GuestDigest(size)
    fd, ofd = os.open(src, os.O_RDONLY), os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        writer = _qcow2.StreamWriter(_qcow2.Layout(size, cluster_size), lambda d: os.write(ofd, d), lambda d, o: os.pwrite(ofd, d, o), "zlib")
        _stream.convert(fd, size, writer, _qcow2.make_compressor("zlib")[0], 2, digest=digest)
        writer.finish()
    finally:
        os.close(fd)
        os.close(ofd)
    expected = independent(to_raw(out, "qcow2", tmp_path))
    assert digest.hexdigest() == expected == independent(src) == _digest.digest_volume(src)


def test_the_digest_ignores_the_container_and_sees_one_byte(tmp_path):
    src = source(tmp_path)
    made = str(tmp_path / "qemu.qcow2")
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=16384", src, made], check=True)
    first = _digest.digest_volume(src)
    assert independent(to_raw(made, "qcow2", tmp_path)) == first, "a qcow2 made by qemu-img digests as its guest"
    with open(src, "r+b") as handle:
        handle.seek(5 * MIB)
        handle.write(b"\x01")
    assert _digest.digest_volume(src) != first and _digest.digest_volume(src) == independent(src)


def test_a_sparse_disk_costs_only_its_data(tmp_path):
    path = str(tmp_path / "big.img")
    with open(path, "wb") as handle:
        handle.truncate(64 * 1024 * MIB)
        handle.seek(40 * 1024 * MIB)
        handle.write(b"x")
    expected = hashlib.sha256(b"vmimage-guest-v1 %d\n" % (64 * 1024 * MIB) + struct.pack(">Q", 40 * 1024 * MIB // 65536)
                              + hashlib.sha256(b"x".ljust(65536, b"\0")).digest()).hexdigest()
    assert _digest.digest_volume(path) == expected


def test_misuse_is_refused():
    digest = _digest.GuestDigest(MIB)
    digest.add(3, bytes(32))
    with pytest.raises(ValueError, match="out of order"):
        digest.add(3, bytes(32))
    with pytest.raises(ValueError, match="multiple"):
        _digest.block_records(b"x", 512)


@pytest.mark.parametrize("made_by", ["qemu-zlib-16k", "qemu-zstd", "qemu-plain", "stream-4k", "stream-2m"])
def test_the_digest_read_back_from_a_qcow2_equals_the_guests(tmp_path, made_by):
    src = source(tmp_path)
    out = str(tmp_path / "image.qcow2")
    if made_by.startswith("qemu"):
        options = {"qemu-zlib-16k": ["-c", "-o", "cluster_size=16384"], "qemu-zstd": ["-c", "-o", "compression_type=zstd"],
                   "qemu-plain": []}[made_by]
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2"] + options + [src, out], check=True)
    else:
        size = os.path.getsize(src)
        fd, ofd = os.open(src, os.O_RDONLY), os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            layout = _qcow2.Layout(size, 4096 if made_by == "stream-4k" else 2 * MIB)
            writer = _qcow2.StreamWriter(layout, lambda d: os.write(ofd, d), lambda d, o: os.pwrite(ofd, d, o), "zlib")
            _stream.convert(fd, size, writer, _qcow2.make_compressor("zlib")[0], 2)
            writer.finish()
        finally:
            os.close(fd)
            os.close(ofd)
    assert _digest.digest_qcow2(_digest.file_reader(out)) == independent(to_raw(out, "qcow2", tmp_path))


def test_a_changed_byte_in_the_image_changes_the_digest_or_fails(tmp_path):
    src = source(tmp_path)
    out = str(tmp_path / "image.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, out], check=True)
    good = _digest.digest_qcow2(_digest.file_reader(out))
    with open(out, "r+b") as handle:  # a byte of guest data (uncompressed image: the first data cluster)
        handle.seek(5 * 65536 + 3)
        handle.write(b"\xff")
    assert _digest.digest_qcow2(_digest.file_reader(out)) != good
    with pytest.raises(_digest.Qcow2Error, match="magic"):
        _digest.digest_qcow2(lambda offset, length: b"\0" * length)
