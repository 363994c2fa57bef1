# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Small local-file helpers shared by the data path: fingerprints, sha256, free space, atomic JSON.

Private to this collection; stdlib only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat

SHA256_BUFFER = 4 << 20  # 4 MiB reads: one pass, few syscalls


def is_block_device(path):
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def fingerprint(path):
    """A cheap identity of a file's state: ``"<size>-<mtime_ns>-<inode>"``; None for block devices.

    Any write through the file system changes the mtime, a replacement changes the
    inode. Block devices have no such cheap identity, so callers treat them as changed.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        return None
    return "%d-%d-%d" % (info.st_size, info.st_mtime_ns, info.st_ino)


def sha256_file(path, buffer_size=SHA256_BUFFER):
    """Hex sha256 of a file, read once with a large buffer."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(buffer_size))
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def data_extents(fd, size):
    """(start, end) ranges of the file open at ``fd`` that may hold data (SEEK_DATA/SEEK_HOLE), in order.

    The whole file where the file system cannot say; a block device answers that it is all data.
    """
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    return
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            yield start, min(end, size)
            pos = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP) or pos:
            raise
        yield 0, size


def free_bytes(directory):
    """Bytes an unprivileged writer may still use in ``directory``'s file system."""
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def remove(path):
    """Remove a file if it is there; True when something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def fsync_path(path):
    """Flush a file (or a directory entry) to stable storage."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path):
    """The JSON document at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path, value, durable=True):
    """Replace ``path`` atomically with ``value`` as JSON; ``durable`` also flushes it to disk first."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
