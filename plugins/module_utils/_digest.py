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

from ansible_collections.vmimage.replication.plugins.module_utils import _files

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
