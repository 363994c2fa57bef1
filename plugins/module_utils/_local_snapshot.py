# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Local snapshots: point-in-time copies of disk image files or block devices.

A snapshot is ``<snapshot_dir>/<name>.<format>`` plus a sidecar
``<snapshot_dir>/<name>.snapshot.json`` (server, volume, created, size, format,
fingerprint, created-by). The copy is a reflink where the file system can
(FICLONE), else a sparse copy that skips holes (SEEK_DATA/SEEK_HOLE) and zero
blocks. Data goes to a temporary name first and is renamed when complete.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
import stat
import subprocess

from ansible_collections.vmimage.replication.plugins.module_utils import _files, _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, terminate_as_error

FICLONE = 0x40049409
BLOCK = 1024 * 1024
PAGE = 4096
SIDECAR = ".snapshot.json"
_NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.EBADF)


def inspect_volume(volume):
    """``(kind, size)`` of a volume; kind is 'file' or 'block'. Raises ReplicationError naming what to fix."""
    try:
        st = os.stat(volume)
    except FileNotFoundError:
        raise ReplicationError("Failed to snapshot volume %s: it does not exist; check the volume path" % volume) from None
    except OSError as exc:
        raise ReplicationError("Failed to snapshot volume %s: %s" % (volume, exc.strerror)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ReplicationError("Failed to snapshot volume %s: it is a directory; give a disk image file or a block device" % volume)
    if stat.S_ISBLK(st.st_mode):
        with open(volume, "rb") as handle:
            return "block", handle.seek(0, os.SEEK_END)
    if not stat.S_ISREG(st.st_mode):
        raise ReplicationError("Failed to snapshot volume %s: it is neither a regular file nor a block device" % volume)
    return "file", st.st_size


def detect_format(path):
    """'qcow2', 'raw', ... from ``qemu-img info`` when qemu-img is installed, else from the magic bytes."""
    if stat.S_ISBLK(os.stat(path).st_mode):
        return "raw"
    qemu_img = shutil.which("qemu-img")
    if qemu_img:
        proc = subprocess.run([qemu_img, "info", "--force-share", "--output=json", path], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            try:
                return json.loads(proc.stdout)["format"]
            except (ValueError, KeyError):
                pass
    with open(path, "rb") as handle:
        magic = handle.read(8)
    if magic[:4] == b"QFI\xfb":
        return "qcow2"
    if magic == b"conectix":
        return "vpc"
    return "raw"


def _try_reflink(src_fd, dst_fd):
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError as exc:
        if exc.errno in _NO_REFLINK:
            return False
        raise


def _write_nonzero(fd, chunk, offset):
    """Write the runs of ``chunk`` that are not whole zero pages; returns bytes written."""
    view = memoryview(chunk)
    zero = bytes(PAGE)
    written = 0
    run_start = None
    for start in range(0, len(chunk), PAGE):
        is_zero = view[start:start + PAGE] == zero[: len(view[start:start + PAGE])]
        if not is_zero and run_start is None:
            run_start = start
        elif is_zero and run_start is not None:
            written += os.pwrite(fd, view[run_start:start], offset + run_start)
            run_start = None
    if run_start is not None:
        written += os.pwrite(fd, view[run_start:], offset + run_start)
    return written


def sparse_copy(src_fd, dst_fd, size, on_chunk=None):
    """Copy ``size`` bytes, leaving holes where the source has holes or zero blocks. Returns bytes written."""
    written = 0
    zero = bytes(BLOCK)
    for start, end in _files.data_extents(src_fd, size):
        pos = start
        while pos < end:
            chunk = os.pread(src_fd, min(BLOCK, end - pos), pos)
            if not chunk:
                break
            if chunk != zero[: len(chunk)]:
                written += _write_nonzero(dst_fd, chunk, pos)
            pos += len(chunk)
            if on_chunk is not None:
                on_chunk(pos)
    os.ftruncate(dst_fd, size)
    return written


def copy_volume(src, dst, size, reflink=True, on_chunk=None):
    """Copy ``src`` to the new file ``dst``; returns the method used: 'reflink' or 'sparse-copy'."""
    src_fd = os.open(src, os.O_RDONLY)
    try:
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if reflink and stat.S_ISREG(os.fstat(src_fd).st_mode) and _try_reflink(src_fd, dst_fd):
                method = "reflink"
            else:
                sparse_copy(src_fd, dst_fd, size, on_chunk)
                method = "sparse-copy"
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return method


def sidecar_path(snapshot_dir, name):
    return os.path.join(snapshot_dir, name + SIDECAR)


def load(snapshot_dir, name):
    """The record of snapshot ``name``, or None."""
    try:
        with open(sidecar_path(snapshot_dir, name), encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ReplicationError("Failed to read snapshot %s in %s: its metadata file is not JSON (%s)" % (name, snapshot_dir, exc)) from None
    if record.get("created-by") != _naming.CREATED_BY:
        return None
    return record


def public(record):
    """The record as modules return it."""
    keys = ("name", "path", "volume", "server", "created", "size", "format", "fingerprint", "method")
    return {k: record.get(k) for k in keys}


def list_snapshots(snapshot_dir, server=None, volume=None, name=None):
    """Records of the snapshots in ``snapshot_dir`` matching the filters, oldest first."""
    if not os.path.isdir(snapshot_dir):
        return []
    records = []
    for entry in sorted(os.listdir(snapshot_dir)):
        if not entry.endswith(SIDECAR):
            continue
        record = load(snapshot_dir, entry[: -len(SIDECAR)])
        if record is None or not os.path.exists(record.get("path", "")):
            continue
        if server is not None and record.get("server") != server:
            continue
        if volume is not None and os.path.abspath(record.get("volume", "")) != os.path.abspath(volume):
            continue
        if name is not None and record.get("name") != name:
            continue
        records.append(record)
    records.sort(key=lambda r: (r.get("created", ""), r.get("name", "")))
    return records


def default_server(volume):
    base = os.path.basename(volume.rstrip("/"))
    return base.split(".", 1)[0] if not base.startswith(".") else base


def _check_dir(snapshot_dir, create):
    if os.path.isdir(snapshot_dir):
        if not os.access(snapshot_dir, os.W_OK | os.X_OK):
            raise ReplicationError("Failed to snapshot into %s: the directory is not writable; fix its permissions or choose another snapshot_dir"
                                   % snapshot_dir)
        return
    if os.path.exists(snapshot_dir):
        raise ReplicationError("Failed to snapshot into %s: it exists and is not a directory; choose another snapshot_dir" % snapshot_dir)
    if create:
        try:
            os.makedirs(snapshot_dir, 0o700)
        except OSError as exc:
            raise ReplicationError("Failed to create snapshot directory %s: %s; choose a writable snapshot_dir" % (snapshot_dir, exc.strerror)) from None


def _copy_unchanged(volume, tmp, size, record, reflink, on_chunk, attempts):
    """Copy ``volume`` to ``tmp`` until a copy starts and ends on the same fingerprint (``attempts`` tries)."""
    for attempt in range(attempts):
        _files.remove(tmp)
        before = _files.fingerprint(volume)
        record["method"] = copy_volume(volume, tmp, size, reflink=reflink, on_chunk=on_chunk)
        after = _files.fingerprint(volume)
        if before == after:
            break
        if attempt + 1 == attempts:
            raise ReplicationError(
                "Failed to snapshot volume %s: it changed while it was being copied (%s, then %s), %d times; "
                "freeze the guest file systems or stop the server, then retry" % (volume, before, after, attempts),
                volume=volume,
            )
        size = inspect_volume(volume)[1]
        record["size"] = size
    record["fingerprint"] = after


def create(volume, snapshot_dir, server=None, name=None, check_mode=False, now=None, reflink=True, on_chunk=None, attempts=2):
    """Take a snapshot of ``volume``; returns ``(record, changed)``.

    Without ``name``, a volume whose fingerprint equals that of its newest snapshot
    is not copied again (changed false). The volume must not change while it is
    copied: its fingerprint is taken before and after, and a changed volume is
    copied again up to ``attempts`` times in all, then the snapshot fails.
    """
    kind, size = inspect_volume(volume)
    server = server or default_server(volume)
    try:
        _naming.check_server(server)
    except ValueError as exc:
        raise ReplicationError("Failed to snapshot volume %s: %s; set the server option" % (volume, exc)) from None
    _check_dir(snapshot_dir, create=not check_mode)
    current = _files.fingerprint(volume)
    if name:
        existing = load(snapshot_dir, name)
        if existing is not None and os.path.exists(existing.get("path", "")):
            if os.path.abspath(existing.get("volume", "")) != os.path.abspath(volume):
                raise ReplicationError("Failed to snapshot volume %s: snapshot %s exists and is of volume %s; choose another name"
                                       % (volume, name, existing.get("volume")))
            return existing, False
    elif current is not None:
        previous = list_snapshots(snapshot_dir, volume=volume)
        if previous and previous[-1].get("fingerprint") == current:
            return previous[-1], False
    taken = _naming.parse_time(now or datetime.datetime.now(datetime.timezone.utc))
    fmt = detect_format(volume)
    name = name or _naming.image_name(server, taken)
    path = os.path.join(snapshot_dir, "%s.%s" % (name, fmt))
    record = {
        "name": name, "path": path, "volume": os.path.abspath(volume), "server": server, "created": _naming.format_time(taken),
        "size": size, "format": fmt, "fingerprint": current, "method": None, "kind": kind, "created-by": _naming.CREATED_BY,
    }
    if check_mode:
        return record, True
    if os.path.exists(path) or os.path.exists(sidecar_path(snapshot_dir, name)):
        raise ReplicationError("Failed to snapshot volume %s: %s already exists and is not a snapshot of it; choose another name" % (volume, path))
    tmp = os.path.join(snapshot_dir, ".%s.partial-%d" % (name, os.getpid()))
    try:
        with terminate_as_error("snapshot volume %s" % volume):
            _copy_unchanged(volume, tmp, size, record, reflink, on_chunk, attempts)
        os.replace(tmp, path)
        _files.write_json(sidecar_path(snapshot_dir, name), record)
    except OSError as exc:
        _files.remove(path)
        raise ReplicationError("Failed to write snapshot %s of volume %s in %s: %s; check the space and permissions of snapshot_dir"
                               % (name, volume, snapshot_dir, exc.strerror or exc), volume=volume) from None
    finally:
        _files.remove(tmp)
    return record, True


def remove(snapshot_dir, name, check_mode=False):
    """Remove snapshot ``name`` and its sidecar; returns ``(record or None, changed)``."""
    record = load(snapshot_dir, name)
    if record is None:
        return None, False
    if not check_mode:
        _files.remove(record["path"])
        _files.remove(sidecar_path(snapshot_dir, name))
    return record, True


def _same_content(a, b, size):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if fa.seek(0, os.SEEK_END) < size or fb.seek(0, os.SEEK_END) < size:
            return False
        fa.seek(0)
        fb.seek(0)
        remaining = size
        while remaining > 0:
            want = min(BLOCK, remaining)
            if fa.read(want) != fb.read(want):
                return False
            remaining -= want
    return True


def restore(snapshot_dir, name, volume=None, check_mode=False):
    """Roll the volume back to snapshot ``name``; returns ``(record, changed)``.

    Files are replaced atomically (copy to a temporary file beside the volume,
    then rename); block devices are written in place. Nothing is written when
    the volume already holds the snapshot's content.
    """
    record = load(snapshot_dir, name)
    if record is None or not os.path.exists(record.get("path", "")):
        known = ", ".join(r["name"] for r in list_snapshots(snapshot_dir)) or "none"
        raise ReplicationError("Failed to restore snapshot %s: no such snapshot in %s (known: %s); check the name" % (name, snapshot_dir, known),
                               name=name)
    volume = volume or record["volume"]
    exists = os.path.exists(volume)
    if exists:
        kind, size = inspect_volume(volume)
        current = _files.fingerprint(volume)
        if current is not None and current in (record.get("fingerprint"), record.get("restored-fingerprint")):
            return record, False
        if size == record["size"] and _same_content(volume, record["path"], size):
            return record, False
    else:
        kind = "file"
        if record.get("kind") == "block":
            raise ReplicationError("Failed to restore snapshot %s: block device %s does not exist; attach it first" % (name, volume))
    if check_mode:
        return record, True
    if kind == "block":
        with open(record["path"], "rb") as src, open(volume, "r+b") as dst:
            shutil.copyfileobj(src, dst, BLOCK)
            dst.flush()
            os.fsync(dst.fileno())
        return record, True
    tmp = os.path.join(os.path.dirname(os.path.abspath(volume)), ".%s.restore-%d" % (os.path.basename(volume), os.getpid()))
    try:
        _files.remove(tmp)
        copy_volume(record["path"], tmp, record["size"])
        if exists:
            st = os.stat(volume)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, volume)
    finally:
        _files.remove(tmp)
    record["restored-fingerprint"] = _files.fingerprint(volume)
    _files.write_json(sidecar_path(snapshot_dir, name), record)
    return record, True
