# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The guest digest: an integrity record of a disk's content, independent of its container.

Definition (``vmimage-guest-v1``, see docs/data-path.md): the guest is cut into 64 KiB
blocks, the last one padded with zeros. The digest is the lowercase hex SHA-256 of the
ASCII line ``vmimage-guest-v1 <virtual size in bytes>\\n`` followed, for every block that
is not all zeros, in increasing block index ``i``, by ``i`` as 8 bytes big-endian and the
32-byte SHA-256 of the block. All-zero blocks contribute nothing, so a mostly empty disk
costs only its data; the same guest gives the same digest as raw, as QCOW2 of any cluster
size or compression.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

from ansible_collections.vmimage.replication.plugins.module_utils import _files
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

BLOCK = 65536
VERSION = "vmimage-guest-v1"
METADATA_KEY = "guest-sha256"
_ZERO = bytes(BLOCK)


def block_records(data, offset):
    """``[(block index, sha256 of the block)]`` for the non-zero blocks of ``data`` read at ``offset`` (a multiple of BLOCK)."""
    if offset % BLOCK:
        raise ValueError("offset %d is not a multiple of the %d-byte digest block" % (offset, BLOCK))
    out = []
    view = memoryview(data)
    for start in range(0, len(data), BLOCK):
        block = view[start:start + BLOCK]
        if block == _ZERO[:len(block)]:
            continue
        if len(block) < BLOCK:
            block = bytes(block) + _ZERO[:BLOCK - len(block)]
        out.append(((offset + start) // BLOCK, hashlib.sha256(block).digest()))
    return out


class GuestDigest:
    """Fed ``add(index, block sha256)`` in increasing index order; ``hexdigest()`` at the end."""

    def __init__(self, virtual_size):
        self._hash = hashlib.sha256(("%s %d\n" % (VERSION, virtual_size)).encode("ascii"))
        self._last = -1

    def add(self, index, block_sha256):
        if index <= self._last:
            raise ValueError("guest digest blocks out of order: %d after %d" % (index, self._last))
        self._last = index
        self._hash.update(struct.pack(">Q", index) + block_sha256)

    def hexdigest(self):
        return self._hash.hexdigest()


def digest_volume(path, virtual_size=None, chunk=4 * 1024 * 1024):
    """The guest digest of a raw volume (file or block device), reading only where it holds data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END) if virtual_size is None else virtual_size
        digest = GuestDigest(size)
        done = 0  # every block before this offset is digested
        for start, end in _files.data_extents(fd, size):
            start = max(start - start % BLOCK, done)
            end = min(size, end + (-end % BLOCK))
            for offset in range(start, end, chunk):
                length = min(chunk, end - offset)
                for index, block_hash in block_records(os.pread(fd, length, offset), offset):
                    digest.add(index, block_hash)
            done = max(done, end)
        return digest.hexdigest()
    finally:
        os.close(fd)


class Qcow2Error(ValueError):
    """The bytes are not a QCOW2 image this reader can follow."""


def _be(data, offset, size):
    return int.from_bytes(data[offset:offset + size], "big")


class Qcow2Reader:
    """The guest clusters of a QCOW2 image read through ``read(offset, length)`` (a file, or ranged GETs of an object)."""

    def __init__(self, read, window=8 * 1024 * 1024):
        self._read, self._window, self._cache = read, window, (0, b"")
        head = read(0, 112)
        if len(head) < 72 or head[:4] != b"QFI\xfb":
            raise Qcow2Error("not a QCOW2 image (no QFI\\xfb magic)")
        version = _be(head, 4, 4)
        self.cluster_bits = _be(head, 20, 4)
        self.cluster_size = 1 << self.cluster_bits
        self.virtual_size = _be(head, 24, 8)
        if not 9 <= self.cluster_bits <= 21:
            raise Qcow2Error("cluster_bits %d is outside QCOW2's 9..21" % self.cluster_bits)
        if _be(head, 8, 8) or _be(head, 32, 4):
            raise Qcow2Error("the image has a backing file or is encrypted")
        incompatible = _be(head, 72, 8) if version >= 3 else 0
        if incompatible & ~0x9:  # dirty (bit 0) and compression type (bit 3) are all this reader knows
            raise Qcow2Error("the image uses QCOW2 features this reader does not know (incompatible features 0x%x)" % incompatible)
        self.compression_type = "zstd" if version >= 3 and _be(head, 100, 4) > 104 and head[104] == 1 else "zlib"
        l1_size = _be(head, 36, 4)
        if l1_size * (self.cluster_size // 8) * self.cluster_size < self.virtual_size:
            raise Qcow2Error("its L1 table (%d entries) does not cover its virtual size %d" % (l1_size, self.virtual_size))
        l1 = read(_be(head, 40, 8), 8 * l1_size)
        self._l1 = [_be(l1, 8 * i, 8) & 0x00fffffffffffe00 for i in range(l1_size)]

    def _bytes(self, offset, length):
        start, data = self._cache
        if not start <= offset or offset + length > start + len(data):
            data = self._read(offset, max(length, self._window))
            self._cache = (offset, data)
            start = offset
        return data[offset - start:offset - start + length]

    def _inflate(self, data):
        if self.compression_type == "zstd":
            import zstandard  # pylint: disable=import-outside-toplevel
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return zlib.decompressobj(-15).decompress(data, self.cluster_size)

    def clusters(self):
        """``(guest cluster index, bytes or None for zeros)`` in guest order."""
        per_l2 = self.cluster_size // 8
        for l1_index, table in enumerate(self._l1):
            if not table:
                continue
            l2 = self._read(table, self.cluster_size)
            for i in range(per_l2):
                entry = _be(l2, 8 * i, 8)
                index = l1_index * per_l2 + i
                if index * self.cluster_size >= self.virtual_size:
                    return
                if entry & (1 << 62):
                    bits = 62 - (self.cluster_bits - 8)
                    host = entry & ((1 << bits) - 1)
                    length = (((entry >> bits) & ((1 << (self.cluster_bits - 8)) - 1)) + 1) * 512 - (host & 511)
                    data = self._inflate(self._bytes(host, length))
                    if len(data) != self.cluster_size:
                        raise Qcow2Error("compressed guest cluster %d inflates to %d bytes, not %d" % (index, len(data), self.cluster_size))
                    yield index, data
                elif entry & 0x00fffffffffffe00 and not entry & 1:
                    yield index, self._bytes(entry & 0x00fffffffffffe00, self.cluster_size)


def digest_qcow2(read):
    """The guest digest of the QCOW2 image read through ``read(offset, length)``."""
    image = Qcow2Reader(read)
    digest = GuestDigest(image.virtual_size)
    span = max(image.cluster_size, BLOCK)
    pending, base = {}, None

    def flush():
        data = b"".join(pending.get(base + k, bytes(image.cluster_size)) for k in range(span // image.cluster_size))
        offset = base * image.cluster_size
        for index, block_hash in block_records(data[:image.virtual_size - offset], offset):
            digest.add(index, block_hash)

    for index, data in image.clusters():
        start = index - index % (span // image.cluster_size)
        if base is not None and start != base:
            flush()
            pending = {}
        base = start
        pending[index] = data
    if base is not None:
        flush()
    return digest.hexdigest()


def file_reader(path):
    """``read(offset, length)`` over a local file (a short read at its end is fine)."""
    def read(offset, length):
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)
    return read


def object_reader(client, bucket, key, size):
    """``read(offset, length)`` by ranged GETs of exactly the bytes that exist.

    The body is read by its exact length, not to its end: some servers (rclone) send the whole object's
    x-amz-checksum with a ranged answer, which the SDK would check against the range at the end of the body.
    """
    def read(offset, length):
        end = min(size, offset + length)
        if offset >= end:
            return b""
        body = client.get_object(Bucket=bucket, Key=key, Range="bytes=%d-%d" % (offset, end - 1))["Body"]
        try:
            return body.read(end - offset)
        finally:
            body.close()
    return read


def _head(client, bucket, key):
    """_cos.head, imported here: qemu_convert and the local stages read digests without the S3 SDK."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos
    return _cos.head(client, bucket, key)


def verify_object(client, bucket, key, expected=None):
    """Recompute the guest digest of s3://bucket/key and check it against ``expected`` or else the object's own record.

    Returns ``{guest_sha256, recorded, virtual_size, size}``; a ReplicationError naming the object on any mismatch.
    """
    name = "s3://%s/%s" % (bucket, key)
    stored = _head(client, bucket, key)
    if stored is None:
        raise ReplicationError("Failed to verify %s: there is no such object" % name, bucket=bucket, key=key)
    recorded = stored["metadata"].get(METADATA_KEY)
    wanted = expected or recorded
    if not wanted:
        raise ReplicationError("Failed to verify %s: the object records no %s and none was given; upload it with "
                               "vmimage.replication.image_upload, or pass the expected digest" % (name, METADATA_KEY), bucket=bucket, key=key)
    try:
        actual = digest_qcow2(object_reader(client, bucket, key, stored["size"]))
    except (Qcow2Error, zlib.error, ValueError) as exc:
        raise ReplicationError("Failed to verify %s: it is not a QCOW2 image that reads back whole (%s); the object is corrupt, "
                               "upload it again" % (name, exc), bucket=bucket, key=key) from None
    except Exception as exc:  # zstandard.ZstdError and friends: a corrupt compressed cluster
        if type(exc).__module__.split(".", maxsplit=1)[0] != "zstandard":
            raise
        raise ReplicationError("Failed to verify %s: a compressed cluster does not inflate (%s); the object is corrupt, upload it again"
                               % (name, exc), bucket=bucket, key=key) from None
    if actual != wanted.lower() or (recorded and expected and recorded.lower() != expected.lower()):
        raise ReplicationError("Failed to verify %s: its guest content digest is %s but %s was expected (%s); the object changed "
                               "after upload or is corrupt: upload it again" % (name, actual, wanted, "given" if expected else "recorded on the object"),
                               bucket=bucket, key=key, guest_sha256=actual)
    return dict(guest_sha256=actual, recorded=recorded, size=stored["size"],
                virtual_size=int(stored["metadata"].get("virtual-size") or 0) or None)


def import_check(client, bucket, key, verify=True):
    """What an importer records of the object's guest digest: ``{"guest_sha256": ...}``, recomputed and checked when
    ``verify``, or ``{}`` when the object records none (uploads made before the digest, or by cos_upload)."""
    stored = _head(client, bucket, key)
    recorded = (stored or {}).get("metadata", {}).get(METADATA_KEY)
    if not recorded:
        return {}
    if verify:
        verify_object(client, bucket, key)
    return {"guest_sha256": recorded.lower()}
