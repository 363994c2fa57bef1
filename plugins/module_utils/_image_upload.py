# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One pass from a raw volume to a compressed QCOW2 object: convert on every core while the parts upload.

Used by the image_upload module. The QCOW2 is spooled to a local file (the upload
reads its parts from there, the sha256 and ``qemu-img check`` need it whole) and
removed whatever happens. The object gets the metadata every upload of this
collection carries; its sha256 is known only at the end, so a multipart object
is given it by a server-side copy onto itself.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _digest, _files, _multipart, _qcow2, _qemu, _stream
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError, terminate_as_error
from ansible_collections.vmimage.replication.plugins.module_utils._stream_upload import GrowingUpload


def check_cluster_size(cluster_size):
    """ValueError unless ``cluster_size`` is one QCOW2 allows."""
    _qcow2.Layout(0, cluster_size)


def conversion_identity(cluster_size, compression_type):
    """What fixes the bytes of the output, recorded on the object so a re-run can tell it is the same conversion."""
    return "qcow2-v3 cluster_size=%d compression_type=%s" % (cluster_size, compression_type)


def open_source(src):
    """``(fd, virtual_size)`` of a raw volume; a clear error for anything else."""
    _qemu.check_source(src)
    fmt, virtual_size = _qemu.source_info(src)
    if fmt != "raw":
        raise ReplicationError(
            "Failed to stream source disk %s: it is a %s image, and image_upload reads raw volumes (disk image files or block devices); "
            "convert it with vmimage.replication.qemu_convert and upload it with vmimage.replication.cos_upload" % (src, fmt), src=src)
    return os.open(src, os.O_RDONLY), virtual_size


def compressor(compression_type, library="auto"):
    """``(compress, library name)``, or a clear error naming the Python package to install."""
    try:
        return _qcow2.make_compressor(compression_type, library=library)
    except ImportError:
        package = "zstandard" if compression_type == "zstd" else "zlib-ng"
        raise MissingDependency("Failed to load the %s compressor: the Python library %s is not installed; pip install %s on the "
                                "conversion host, or choose another compression" % (compression_type, package, package)) from None


def plan(client, bucket, key, fingerprint, identity, force):
    """(existing object or None, up to date?): an object made from this source state by the same conversion needs nothing."""
    existing = _cos.head(client, bucket, key)
    meta = existing["metadata"] if existing else {}
    current = (existing is not None and not force and fingerprint is not None and meta.get("src-fingerprint") == fingerprint
               and meta.get("conversion") == identity and bool(meta.get("sha256")))
    return existing, current


def _result(key, virtual_size, **values):
    result = dict(key=key, format="qcow2", virtual_size=virtual_size, size=None, compression_ratio=None, sha256=None, etag=None, metadata={},
                  parts=0, resumed_parts=0, uploaded_bytes=0, read_bytes=0, seconds=0.0, bytes_per_second=0, verified="none", changed=False,
                  guest_sha256=None)
    result.update(values)
    return result


def ensure_present(client, params, check_mode=False, progress=None, clock=time.monotonic):
    """Stream ``params["src"]`` to ``params["bucket"]``/``params["key"]`` unless it is there already; the result dict."""
    src, bucket, key = params["src"], params["bucket"], params["key"]
    identity = conversion_identity(params["cluster_size"], params["compression_type"])
    compress, library = compressor(params["compression_type"], params.get("deflate_library", "auto"))
    fd, virtual_size = open_source(src)
    try:
        fingerprint = _files.fingerprint(src)
        existing, current = plan(client, bucket, key, fingerprint, identity, params["force"])
        if current:
            meta = existing["metadata"]
            return _result(key, virtual_size, size=existing["size"], sha256=meta["sha256"], etag=existing["etag"], metadata=meta,
                           compression_ratio=round(virtual_size / float(existing["size"]), 2) if existing["size"] else None,
                           compressor=library, guest_sha256=meta.get(_digest.METADATA_KEY))
        metadata = _cos.object_metadata(params["metadata"], "")
        del metadata["sha256"]  # known at the end; an incomplete upload must not claim one
        metadata.update({"format": "qcow2", "virtual-size": str(virtual_size), "conversion": identity,
                         "src-fingerprint": fingerprint or ""})
        if check_mode:
            return _result(key, virtual_size, metadata=metadata, changed=True, compressor=library)
        with terminate_as_error("stream source disk %s to s3://%s/%s" % (src, bucket, key)):
            return _stream_to(client, params, fd, virtual_size, compress, metadata, progress, clock, compressor=library)
    finally:
        os.close(fd)


def spool_path(work_dir, bucket, key):
    return os.path.join(work_dir, ".%s_%s.stream.partial" % (bucket, key.replace("/", "_")))


def open_spool(path, bucket, key):
    """The spool, locked for this run: one left by a killed run is taken over, one in use is an error."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ReplicationError("Failed to stream to s3://%s/%s: another run is streaming it now (its spool %s is locked); "
                               "wait for it to end" % (bucket, key, path), bucket=bucket, key=key) from None
    os.ftruncate(fd, 0)
    return fd


def write_all(fd, data):
    """``os.write`` until all of ``data`` is written (a short write would shift every later offset)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _stream_to(client, params, fd, virtual_size, compress, metadata, progress, clock, **extra):
    started = clock()
    src, bucket, key = params["src"], params["bucket"], params["key"]
    layout = _qcow2.Layout(virtual_size, params["cluster_size"])
    chunks = _stream.chunk_plan(list(_files.data_extents(fd, virtual_size)), virtual_size, _stream.alignment(layout.cluster_size))
    digest = _digest.GuestDigest(virtual_size)
    data_clusters = sum(-(-length // layout.cluster_size) for _offset, length in chunks)
    work_dir = params["work_dir"]
    spool = spool_path(work_dir, bucket, key)
    _qemu.check_free_space(layout.uncompressed_size(data_clusters), work_dir, _files.free_bytes(work_dir))
    # Part 1 is sent last because it holds the front, written last: it must hold all of it (large clusters, huge disks).
    part_size = _multipart.plan_part_size(layout.upper_bound(data_clusters), max(params["part_size_mb"] * _multipart.MIB, layout.data_start))
    out = open_spool(spool, bucket, key)
    upload = None
    done = False
    try:
        upload = GrowingUpload(client, bucket, key, spool, out, part_size, params["concurrency"], metadata,
                               _multipart.find_resumable(client, bucket, key, params["keep_incomplete"]), front=layout.data_start)
        writer = _qcow2.StreamWriter(layout, lambda data: write_all(out, data), lambda data, offset: os.pwrite(out, data, offset),
                                     params["compression_type"])
        if progress is not None:
            progress.update(0, total=sum(length for _offset, length in chunks), force=True)
        read = _stream.convert(fd, virtual_size, writer, compress, params["threads"], on_final=upload.on_final,
                               on_progress=(lambda count, total: progress.update(count)) if progress is not None else None,
                               chunks=chunks, digest=digest)
        metadata[_digest.METADATA_KEY] = digest.hexdigest()
        size = writer.finish()
        verified = _qemu.verify_output(spool, "qcow2", src, "raw", params["verify"])
        multipart = upload.send_rest(size)
        sha256 = _files.sha256_file(spool)  # while the last parts are on their way
        metadata["sha256"] = sha256
        if multipart:
            md5s = upload.complete()
            parts, resumed = len(md5s), len(upload.kept)
            _cos.set_metadata(client, bucket, key, size, metadata)
        else:
            data = _multipart.read_part(out, 0, size, spool)
            client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata,
                              ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode("ascii"))  # nosec - S3 integrity
            parts, resumed = 1, 0
            if upload.upload_id is not None:  # an interrupted upload of a larger image: it cannot be finished now
                _cos.abort_upload(client, bucket, key, upload.upload_id)
        stored = _cos.head(client, bucket, key)
        if stored is None or stored["size"] != size or stored["metadata"].get("sha256") != sha256:
            raise ReplicationError("Failed to upload s3://%s/%s: the stored object does not have the size %d and sha256 %s just written; "
                                   "retry the upload" % (bucket, key, size, sha256))
        done = True
    finally:
        if upload is not None:
            upload.close(abort=not done and not params["keep_incomplete"])
        _files.remove(spool)  # while still locked: a run that starts now makes its own
        os.close(out)
        if progress is not None:
            progress.finish(*(() if done else ("failed",)))
    seconds = max(clock() - started, 1e-6)
    sent = upload.sent_bytes if multipart else size
    return _result(key, virtual_size, size=size, compression_ratio=round(virtual_size / float(size), 2), sha256=sha256, etag=stored["etag"],
                   metadata=stored["metadata"], parts=parts, resumed_parts=resumed, uploaded_bytes=sent, read_bytes=read,
                   seconds=round(seconds, 3), bytes_per_second=int(read / seconds), verified=verified, changed=True,
                   clusters=dict(writer.stored_clusters), part_size=part_size, guest_sha256=digest.hexdigest(), **extra)
