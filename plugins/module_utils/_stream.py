# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Raw volume -> compressed QCOW2, on every core, in guest order.

The source is read once, only where it holds data (SEEK_DATA/SEEK_HOLE on files;
block devices are read whole), in chunks that a pool of threads reads, checks for
zeros and compresses (zlib and zstd release the GIL while they work). Results are
taken in order, with a bounded number in flight, and appended by a
``_qcow2.StreamWriter``; after each chunk ``on_final(position)`` says how many
bytes of the output are final, which is what lets the upload run alongside.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import os
import stat

from ansible_collections.vmimage.replication.plugins.module_utils import _digest, _files

CHUNK_BYTES = 2 * 1024 * 1024  # per task: large enough to amortise the pool, small enough to spread the work


def chunk_plan(extents, size, cluster_size, chunk_bytes=CHUNK_BYTES):
    """``[(offset, length)]`` cluster-aligned chunks covering ``extents``, in order, none read twice."""
    chunk_bytes = max(cluster_size, chunk_bytes - chunk_bytes % cluster_size)
    chunks = []
    done = 0  # everything before this offset is planned
    for start, end in extents:
        start = max(start - start % cluster_size, done)
        end = min(size, end + (-end % cluster_size))
        for offset in range(start, end, chunk_bytes):
            chunks.append((offset, min(chunk_bytes, end - offset)))
        done = max(done, end)
    return chunks


def read_exact(fd, length, offset):
    """``length`` bytes at ``offset``; a source that shrank under us is an error, not zeros."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise OSError(errno.EIO, "short read: %d bytes at offset %d, expected %d (the source shrank while it was read)"
                      % (len(data), offset, length))
    return data


def compress_chunk(fd, offset, length, cluster_size, compress, end=None):
    """``[(guest cluster, payload, compressed)]`` for the non-zero clusters of one chunk.

    Bytes at or past ``end`` (the source's own size, when qemu rounds it up to whole sectors) read as zeros.
    """
    return compress_clusters(read_chunk(fd, offset, length, end), offset, cluster_size, compress)


def read_chunk(fd, offset, length, end=None):
    """``length`` bytes at ``offset``, zeros at or past ``end``."""
    readable = length if end is None else max(0, min(length, end - offset))
    return read_exact(fd, readable, offset) + bytes(length - readable)


def digest_and_compress(fd, offset, length, cluster_size, compress, end=None):
    """``(compress_chunk's list, _digest.block_records of the chunk)``: one read for both."""
    data = read_chunk(fd, offset, length, end)
    return compress_clusters(data, offset, cluster_size, compress), _digest.block_records(data, offset)


def compress_clusters(data, offset, cluster_size, compress):
    """``[(guest cluster, payload, compressed)]`` for the non-zero clusters of ``data`` read at ``offset``."""
    length = len(data)
    zero = bytes(cluster_size)
    out = []
    for start in range(0, length, cluster_size):
        block = data[start:start + cluster_size]
        if block == zero[:len(block)]:
            continue  # unallocated in the image: reads back as zeros
        if len(block) < cluster_size:
            block += zero[:cluster_size - len(block)]  # the tail of a size that is not a multiple of the cluster
        packed = compress(block)
        if len(packed) < cluster_size:
            out.append(((offset + start) // cluster_size, packed, True))
        else:  # incompressible: stored whole, as qemu does
            out.append(((offset + start) // cluster_size, block, False))
    return out


def alignment(cluster_size):
    """What chunks are aligned to: whole clusters of the image and whole blocks of the guest digest."""
    return max(cluster_size, _digest.BLOCK)


def convert(fd, size, writer, compress, threads, on_progress=None, on_final=None, chunks=None, digest=None):
    """Feed the volume open at ``fd`` (``size`` bytes) through ``writer``; returns bytes of source read.

    ``chunks`` is the ``chunk_plan`` of the source (aligned to ``alignment(cluster_size)``), when the caller
    has made it already. ``digest`` (a ``_digest.GuestDigest``) is fed the guest's blocks in order.
    """
    cluster_size = writer.layout.cluster_size
    end = os.fstat(fd).st_size if stat.S_ISREG(os.fstat(fd).st_mode) else size
    if chunks is None:
        chunks = chunk_plan(list(_files.data_extents(fd, size)), size, alignment(cluster_size))
    task = compress_chunk if digest is None else digest_and_compress
    total = sum(length for _offset, length in chunks)
    done = 0
    window = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        pending = iter(chunks)
        try:
            while True:
                while len(window) < 2 * max(1, threads) + 2:  # bounded: compressed results wait in memory, not the whole disk
                    chunk = next(pending, None)
                    if chunk is None:
                        break
                    window.append((chunk[1], pool.submit(task, fd, chunk[0], chunk[1], cluster_size, compress, end)))
                if not window:
                    break
                length, future = window.popleft()
                result = future.result()
                if digest is not None:
                    result, records = result
                    for index, block_hash in records:
                        digest.add(index, block_hash)
                for guest, payload, compressed in result:
                    writer.add(guest, payload, compressed)
                done += length
                if on_progress is not None:
                    on_progress(done, total)
                if on_final is not None:
                    on_final(writer.position)
        except BaseException:
            for _length, future in window:
                future.cancel()
            raise
    return done
