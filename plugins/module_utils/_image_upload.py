# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One pass from a raw volume to a compressed QCOW2 object: convert on every core while the parts upload.

Used by the image_upload module. Nothing is written locally: parts are sent from
memory as soon as they are whole, part 1 (the header and tables, written last)
is held in memory until the end (``_stream_upload``). The object is verified
where it is stored, after CompleteMultipartUpload and before anything can
register it: read back once (its sha256, and every part's MD5 against the part
sent) and checked by qemu-img reading the object itself (``_qemu.verify_object``);
a failure deletes it. Its sha256 and guest digest are known only then, so a
multipart object is given them by a server-side copy onto itself.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import os
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _digest, _files, _multipart, _qcow2, _qemu, _stream
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError, terminate_as_error
from ansible_collections.vmimage.replication.plugins.module_utils._stream_upload import PartsDiffer, StreamedUpload


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


READ_BACK_BYTES = 8 * _multipart.MIB  # window of the read-back: memory stays flat
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter numbers (malloc.h)
M_ARENA_MAX = -8


def return_freed_buffers():
    """Make glibc give each part buffer back to the system when it is freed.

    By default glibc raises its mmap threshold after the first large buffer is freed, and later 16 MiB
    parts then come from per-thread heaps that keep their pages: RSS creeps up with threads and parts.
    A fixed threshold (which also stops the raising) and few arenas keep it flat. Elsewhere than glibc, nothing.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def read_back(client, bucket, key, ranges, md5s):
    """sha256 of the stored object, read once in order; each part's bytes must have the MD5 of the part sent."""
    where = "s3://%s/%s" % (bucket, key)
    size = sum(length for _number, _offset, length in ranges)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    whole = hashlib.sha256()
    try:
        for (number, _offset, length), expected in zip(ranges, md5s):
            part = hashlib.md5()  # nosec - compared with the MD5 of the part sent
            left = length
            while left:
                data = body.read(min(left, READ_BACK_BYTES))
                if not data:
                    raise ReplicationError("Failed to verify the stored object %s: it ends in part %d, %d bytes short of the %d uploaded; "
                                           "it was deleted, run again" % (where, number, left, size), bucket=bucket, key=key)
                part.update(data)
                whole.update(data)
                left -= len(data)
            if part.hexdigest() != expected:
                raise ReplicationError("Failed to verify the stored object %s: part %d (%d bytes) reads back with MD5 %s, the part sent had %s; "
                                       "it was deleted, run again" % (where, number, length, part.hexdigest(), expected), bucket=bucket, key=key)
        if body.read(1):
            raise ReplicationError("Failed to verify the stored object %s: it is longer than the %d bytes uploaded; it was deleted, run again"
                                   % (where, size), bucket=bucket, key=key)
    finally:
        body.close()
    return whole.hexdigest()


def _stream_to(client, params, fd, virtual_size, compress, metadata, progress, clock, **extra):
    return_freed_buffers()
    layout = _qcow2.Layout(virtual_size, params["cluster_size"])
    chunks = _stream.chunk_plan(list(_files.data_extents(fd, virtual_size)), virtual_size, _stream.alignment(layout.cluster_size))
    data_clusters = sum(-(-length // layout.cluster_size) for _offset, length in chunks)
    part_size = _multipart.plan_part_size(layout.upper_bound(data_clusters), params["part_size_mb"] * _multipart.MIB)
    resume = _multipart.find_resumable(client, params["bucket"], params["key"], params["keep_incomplete"])
    try:
        return _attempt(client, params, fd, layout, chunks, part_size, compress, dict(metadata), progress, clock, resume, extra)
    except PartsDiffer:
        # The interrupted upload holds other bytes (another source state or conversion): nothing is spooled to resend
        # the parts already made, so that upload is aborted and the conversion starts again into a fresh one.
        _cos.abort_upload(client, params["bucket"], params["key"], resume[0])
    return _attempt(client, params, fd, layout, chunks, part_size, compress, dict(metadata), progress, clock, (None, {}), extra)


def _attempt(client, params, fd, layout, chunks, part_size, compress, metadata, progress, clock, resume, extra):
    started = clock()
    src, bucket, key = params["src"], params["bucket"], params["key"]
    digest = _digest.GuestDigest(layout.virtual_size)
    upload = StreamedUpload(client, bucket, key, part_size, params["concurrency"], dict(metadata), resume, front=layout.data_start)
    done = created = retry = False
    failure = None
    try:
        writer = _qcow2.StreamWriter(layout, upload.write, upload.pwrite, params["compression_type"])
        if progress is not None:
            progress.update(0, total=sum(length for _offset, length in chunks), force=True)
        read = _stream.convert(fd, layout.virtual_size, writer, compress, params["threads"],
                               on_progress=(lambda count, total: progress.update(count)) if progress is not None else None,
                               chunks=chunks, digest=digest)
        metadata[_digest.METADATA_KEY] = digest.hexdigest()
        size = writer.finish()
        multipart = upload.send_rest(size)
        if multipart:
            md5s, ranges = upload.complete(), upload.part_ranges()
            parts, resumed, sent = len(md5s), len(upload.kept), upload.sent_bytes
        else:
            data = upload.front_bytes(size)
            md5s, ranges = [hashlib.md5(data).hexdigest()], [(1, 0, size)]  # nosec - S3 integrity
            metadata["sha256"] = hashlib.sha256(data).hexdigest()
            client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata,
                              ContentMD5=base64.b64encode(bytes.fromhex(md5s[0])).decode("ascii"))
            parts, resumed, sent = 1, 0, size
            if upload.upload_id is not None:  # an interrupted upload of a larger image: it cannot be finished now
                _cos.abort_upload(client, bucket, key, upload.upload_id)
        created = True
        checked = clock()
        sha256 = read_back(client, bucket, key, ranges, md5s)
        verified = _qemu.verify_object(client, bucket, key, size, "qcow2", src, "raw", params["verify"])
        verify_seconds = clock() - checked
        if multipart:
            metadata["sha256"] = sha256
            _cos.set_metadata(client, bucket, key, size, metadata)  # deletes the object if it fails
        stored = _cos.head(client, bucket, key)
        if stored is None or stored["size"] != size or stored["metadata"].get("sha256") != sha256:
            raise ReplicationError("Failed to upload s3://%s/%s: the stored object does not have the size %d and sha256 %s just written; "
                                   "retry the upload" % (bucket, key, size, sha256), bucket=bucket, key=key)
        done = True
    except PartsDiffer:
        retry = True  # the caller converts again: neither the upload (it aborts it) nor the progress is final
        raise
    except ReplicationError as exc:
        failure = exc
        raise
    finally:
        upload.close(abort=not done and not retry and not params["keep_incomplete"])
        if (created or upload.completed) and not done:
            left = _delete_unverified(client, bucket, key)
            if left and failure is not None:
                failure.extend_msg(left, "; but ")
        if progress is not None and not done and not retry:
            progress.finish("failed")
    if progress is not None:
        progress.finish()
    seconds = max(clock() - started, 1e-6)
    return _result(key, layout.virtual_size, size=size, compression_ratio=round(layout.virtual_size / float(size), 2), sha256=sha256,
                   etag=stored["etag"], metadata=stored["metadata"], parts=parts, resumed_parts=resumed, uploaded_bytes=sent, read_bytes=read,
                   seconds=round(seconds, 3), bytes_per_second=int(read / seconds), verified=verified, changed=True,
                   clusters=dict(writer.stored_clusters), part_size=part_size, guest_sha256=digest.hexdigest(),
                   verify_seconds=round(verify_seconds, 3), **extra)


def _delete_unverified(client, bucket, key):
    """An object that failed its verification must not be registered: remove it. The failure is the one to report, so a
    delete that fails only adds what to do by hand (returned), or None."""
    try:
        _cos.delete_object(client, bucket, key)
    except (_cos.ClientError, _cos.BotoCoreError, OSError) as exc:
        return "the unverified object could not be deleted (%s): delete s3://%s/%s by hand before anything imports it" % (
            _cos.error_code(exc) or type(exc).__name__, bucket, key)
    return None
