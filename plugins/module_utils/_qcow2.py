# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A QCOW2 (version 3) writer that emits the file front to back, for streaming.

qemu-img rewrites its metadata in place while it converts, so its output can only
be shipped once it is complete. This writer appends instead: compressed clusters
packed byte by byte in guest order, each L2 table as soon as its 512 MiB of guest
space is done, the refcount blocks at the end. Only the first clusters (header,
L1 table, refcount table) are written last, at offsets fixed up front; whatever
lies past them is final the moment it is appended, so it can be uploaded while
the rest is still being compressed. The layout follows qemu's
docs/interop/qcow2.txt; qemu-img check and compare read the result.
"""

from __future__ import annotations

import array
import struct
import sys
import threading
import zlib

MAGIC = b"QFI\xfb"
HEADER_LENGTH = 112  # version 3 header with the compression type byte, padded to 8
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62
INCOMPAT_COMPRESSION = 1 << 3
COMPRESSION_TYPES = {"zlib": 0, "zstd": 1}
SECTOR = 512
MAX_L1_BYTES = 32 * 1024 * 1024  # qemu's QCOW_MAX_L1_SIZE
MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024  # qemu's QCOW_MAX_REFTABLE_SIZE


def _ceil_div(value, divisor):
    return -(-value // divisor)


class Layout:
    """Where everything of a QCOW2 of ``virtual_size`` bytes goes, decided before the first byte is written."""

    def __init__(self, virtual_size, cluster_size=65536):
        if cluster_size < 4096 or cluster_size > 2 * 1024 * 1024 or cluster_size & (cluster_size - 1):
            raise ValueError("cluster_size must be a power of two from 4096 to 2097152, not %r" % cluster_size)
        self.virtual_size = int(virtual_size)
        self.cluster_size = cluster_size
        self.cluster_bits = cluster_size.bit_length() - 1
        self.l2_entries = cluster_size // 8
        self.guest_clusters = _ceil_div(self.virtual_size, cluster_size)
        self.l1_size = max(1, _ceil_div(self.guest_clusters, self.l2_entries))
        self.refcounts_per_block = cluster_size // 2  # refcount_order 4: 16-bit refcounts
        l1_clusters = _ceil_div(self.l1_size * 8, cluster_size)
        # The refcount table must cover the largest file this can become: every guest cluster stored
        # whole and aligned, every L2 table, and the refcount blocks themselves.
        bound = 1 + l1_clusters + 1 + self.guest_clusters + self.l1_size
        blocks = _ceil_div(bound, self.refcounts_per_block)
        blocks = _ceil_div(bound + blocks + _ceil_div(blocks * 8, cluster_size), self.refcounts_per_block)
        self.refcount_table_clusters = _ceil_div(blocks * 8, cluster_size)
        self.l1_offset = cluster_size
        self.refcount_table_offset = self.l1_offset + l1_clusters * cluster_size
        self.data_start = self.refcount_table_offset + self.refcount_table_clusters * cluster_size
        if self.l1_size * 8 > MAX_L1_BYTES or self.refcount_table_clusters * cluster_size > MAX_REFCOUNT_TABLE_BYTES:
            raise ValueError("a %d-byte disk is too large for cluster_size %d (qemu limits the L1 table to %d bytes and the refcount table "
                             "to %d); use a larger cluster_size" % (self.virtual_size, cluster_size, MAX_L1_BYTES, MAX_REFCOUNT_TABLE_BYTES))

    def uncompressed_size(self, data_clusters):
        """The file if ``data_clusters`` guest clusters were stored whole: what qemu-img measure answers, the free space asked for."""
        return self.data_start + (data_clusters + self.l1_size) * self.cluster_size

    def upper_bound(self, data_clusters):
        """The largest file ``data_clusters`` stored guest clusters can make (it sizes the parts: at most 10,000).

        Each is under one cluster compressed or one whole; a whole one after compressed data is aligned, which pads
        at most one cluster, and at worst every other one is whole; every L2 table too; then the refcount blocks.
        """
        clusters = self.data_start // self.cluster_size + data_clusters + _ceil_div(data_clusters, 2) + 2 * self.l1_size
        return (clusters + _ceil_div(clusters, self.refcounts_per_block) + 1) * self.cluster_size

    def compressed_entry(self, offset, length):
        """The L2 entry of a compressed cluster of ``length`` bytes at host ``offset`` (byte-granular)."""
        csize_shift = 62 - (self.cluster_bits - 8)
        sectors = (offset + length - 1) // SECTOR - offset // SECTOR  # beyond the sector holding the offset
        return OFLAG_COMPRESSED | (sectors << csize_shift) | offset


def deflate_library(name="auto"):
    """``(module, name)`` of the deflate implementation: zlib-ng (same format, about 2.5x less CPU) when installed, else zlib."""
    if name in ("auto", "zlib-ng"):
        try:
            from zlib_ng import zlib_ng  # pylint: disable=import-outside-toplevel
            return zlib_ng, "zlib-ng"
        except ImportError:
            if name == "zlib-ng":
                raise
    return zlib, "zlib"


def make_compressor(compression_type, level=None, library="auto"):
    """``(compress, library name)``; ``compress(cluster) -> bytes`` packs one cluster as qemu stores it.

    zlib: a raw deflate stream with a 4 KiB window (qemu inflates with ``inflateInit2(-12)``), from
    zlib or zlib-ng; zstd: one zstd frame.
    """
    if compression_type == "zlib":
        level = 6 if level is None else level  # Z_DEFAULT_COMPRESSION, what qemu uses
        lib, name = deflate_library(library)

        def deflate(data):
            packer = lib.compressobj(level, lib.DEFLATED, -12, 9)
            return packer.compress(data) + packer.flush()
        return deflate, name
    if compression_type == "zstd":
        import zstandard  # pylint: disable=import-outside-toplevel  # optional: only for zstd output

        local = threading.local()  # a ZstdCompressor must not be shared between threads

        def zstd(data):
            packer = getattr(local, "packer", None)
            if packer is None:
                packer = local.packer = zstandard.ZstdCompressor(level=3 if level is None else level)  # qemu's default level
            return packer.compress(data)
        return zstd, "zstandard"
    raise ValueError("compression_type must be zlib or zstd, not %r" % compression_type)


class StreamWriter:
    """Append-only QCOW2 writer: ``add()`` guest clusters in increasing order, then ``finish()``.

    ``write(data)`` appends to the output and ``pwrite(data, offset)`` fills the front at the end;
    nothing else is ever rewritten. ``position`` is the number of bytes appended so far, all final
    except the first ``layout.data_start`` bytes.
    """

    def __init__(self, layout, write, pwrite, compression_type="zlib"):
        self.layout = layout
        self._write = write
        self._pwrite = pwrite
        self.compression_type = compression_type
        self.position = 0
        self.refcounts = array.array("H")
        self.l1 = [0] * layout.l1_size
        self._l2 = None
        self._l2_index = None
        self._last_guest = -1
        self.stored_clusters = {"compressed": 0, "uncompressed": 0}
        self._append(bytes(layout.data_start))  # placeholder for the front; written by finish()
        for cluster in range(layout.data_start // layout.cluster_size):
            self._ref(cluster)

    # -- low level --

    def _append(self, data):
        if data:
            self._write(data)
            self.position += len(data)

    def _ref(self, cluster):
        missing = cluster + 1 - len(self.refcounts)
        if missing > 0:
            self.refcounts.extend([0] * missing)
        if self.refcounts[cluster] == 0xFFFF:
            raise ValueError("refcount overflow at host cluster %d" % cluster)
        self.refcounts[cluster] += 1

    def _align(self):
        self._append(bytes(-self.position % self.layout.cluster_size))

    def _flush_l2(self):
        if self._l2 is None:
            return
        self._align()
        offset = self.position
        table = array.array("Q", self._l2)
        if sys.byteorder == "little":
            table.byteswap()
        self._append(table.tobytes())
        self._ref(offset // self.layout.cluster_size)
        self.l1[self._l2_index] = offset | OFLAG_COPIED
        self._l2 = None

    def _entry(self, guest, value):
        index, slot = divmod(guest, self.layout.l2_entries)
        if index != self._l2_index:
            self._flush_l2()
            self._l2_index = index
        if self._l2 is None:
            self._l2 = [0] * self.layout.l2_entries
        self._l2[slot] = value

    # -- public --

    def add(self, guest, payload, compressed):
        """Store guest cluster number ``guest``: ``payload`` is its compressed form, or the whole cluster."""
        layout = self.layout
        if guest <= self._last_guest or guest >= layout.guest_clusters:
            raise ValueError("guest cluster %d is out of order or past the end (%d clusters)" % (guest, layout.guest_clusters))
        self._last_guest = guest
        if compressed:
            offset = self.position
            self._append(payload)
            # Readers fetch whole 512-byte sectors; those never cross a cluster boundary.
            for cluster in range(offset >> layout.cluster_bits, ((self.position - 1) >> layout.cluster_bits) + 1):
                self._ref(cluster)
            self._entry(guest, layout.compressed_entry(offset, len(payload)))
            self.stored_clusters["compressed"] += 1
        else:
            if len(payload) != layout.cluster_size:
                raise ValueError("an uncompressed cluster must be %d bytes, not %d" % (layout.cluster_size, len(payload)))
            self._align()
            offset = self.position
            self._append(payload)
            self._ref(offset >> layout.cluster_bits)
            self._entry(guest, offset | OFLAG_COPIED)
            self.stored_clusters["uncompressed"] += 1

    def finish(self):
        """Append the last L2 table and the refcount blocks, then write the front; returns the file size."""
        layout = self.layout
        self._flush_l2()
        self._align()
        first_block = self.position // layout.cluster_size
        blocks = 0
        while True:  # the blocks count themselves
            needed = _ceil_div(first_block + blocks, layout.refcounts_per_block)
            if needed <= blocks:
                break
            blocks = needed
        if blocks > layout.refcount_table_clusters * layout.cluster_size // 8:
            raise ValueError("the refcount table is too small for %d refcount blocks" % blocks)
        for cluster in range(first_block, first_block + blocks):
            self._ref(cluster)
        total = first_block + blocks
        self.refcounts.extend([0] * (blocks * layout.refcounts_per_block - len(self.refcounts)))
        if sys.byteorder == "little":
            self.refcounts.byteswap()
        self._append(self.refcounts.tobytes())
        table = [(first_block + n) * layout.cluster_size for n in range(blocks)]
        self._pwrite(self.front(table), 0)
        return total * layout.cluster_size

    def front(self, refcount_blocks):
        """Header, L1 table and refcount table: the first ``layout.data_start`` bytes of the file."""
        layout = self.layout
        incompatible = INCOMPAT_COMPRESSION if self.compression_type != "zlib" else 0
        header = struct.pack(
            ">4sIQIIQIIQQIIQQQQII",
            MAGIC, 3, 0, 0, layout.cluster_bits, layout.virtual_size, 0, layout.l1_size, layout.l1_offset,
            layout.refcount_table_offset, layout.refcount_table_clusters, 0, 0, incompatible, 0, 0, 4, HEADER_LENGTH,
        ) + struct.pack(">B7x", COMPRESSION_TYPES[self.compression_type])
        front = bytearray(layout.data_start)
        front[:len(header)] = header
        front[layout.l1_offset:layout.l1_offset + 8 * layout.l1_size] = struct.pack(">%dQ" % layout.l1_size, *self.l1)
        start = layout.refcount_table_offset
        front[start:start + 8 * len(refcount_blocks)] = struct.pack(">%dQ" % len(refcount_blocks), *refcount_blocks)
        return bytes(front)
