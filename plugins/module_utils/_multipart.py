# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Resumable, verified multipart upload of one local file to an S3 key.

Parts are read with ``os.pread`` and sent by a pool of threads, each with its
``Content-MD5``; the ETag the endpoint returns is checked against the part's MD5.
An interrupted upload of the same key is found with ``ListMultipartUploads`` and
continued: listed parts whose size and MD5 match the local file are kept, only
the others are sent. A failed upload is aborted unless the caller keeps it.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import threading
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _files
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MIB = 1024 * 1024
MIN_PART = 5 * MIB
MAX_PARTS = 10000


def plan_part_size(size, part_size):
    """The part size to use: at least 5 MiB, and large enough that no more than 10,000 parts are needed."""
    part_size = max(int(part_size), MIN_PART)
    while -(-size // part_size) > MAX_PARTS:
        part_size *= 2
    return part_size


def part_ranges(size, part_size):
    """[(part_number, offset, length)] covering ``size`` bytes."""
    return [(number + 1, offset, min(part_size, size - offset)) for number, offset in enumerate(range(0, size, part_size))]


def read_part(fd, offset, length, path):
    """``length`` bytes at ``offset``; fails when the file has become shorter."""
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise ReplicationError(
            "Failed to read file %s: it is shorter than when the upload started (%d bytes at offset %d, expected %d); "
            "it changed while uploading, upload a file that is not being written" % (path, len(data), offset, length),
            src=path,
        )
    return data


def list_parts(client, bucket, key, upload_id):
    parts = {}
    kwargs = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        page = client.list_parts(**kwargs)
        for part in page.get("Parts") or []:
            parts[part["PartNumber"]] = {"size": part["Size"], "etag": part["ETag"].strip('"')}
        if not page.get("IsTruncated"):
            return parts
        kwargs["PartNumberMarker"] = page.get("NextPartNumberMarker")


def find_resumable(client, bucket, key, keep_incomplete=False):
    """The newest in-progress upload of exactly ``key`` with its listed parts, or (None, {}).

    Start times may be kept to the second only: of uploads started in the same second, the one with
    most parts wins. The others are aborted (unless ``keep_incomplete``): only one can be continued.
    """
    uploads = _cos.uploads_for_key(client, bucket, key)
    if not uploads:
        return None, {}
    for upload in uploads:
        upload["parts"] = list_parts(client, bucket, key, upload["upload_id"])
    newest = max(uploads, key=lambda upload: (upload["initiated"] is not None, upload["initiated"], len(upload["parts"])))
    if not keep_incomplete:
        for stale in uploads:
            if stale is not newest:
                _cos.abort_upload(client, bucket, key, stale["upload_id"])
    return newest["upload_id"], newest["parts"]


def reusable_parts(fd, path, size, part_size, listed):
    """Part numbers of ``listed`` whose size and MD5 match the local file at that offset."""
    keep = {}
    for number, offset, length in part_ranges(size, part_size):
        part = listed.get(number)
        if part is None or part["size"] != length:
            continue
        if hashlib.md5(read_part(fd, offset, length, path)).hexdigest() == part["etag"]:  # nosec - S3 part integrity, not security
            keep[number] = part["etag"]
    return keep


class Counter:
    """Bytes sent (and done, resumed ones included), reported to the progress file; shared by the sending threads."""

    def __init__(self, progress, start):
        self.lock = threading.Lock()
        self.progress = progress
        self.done = start
        self.sent = 0

    def add(self, count):
        with self.lock:
            self.done += count
            self.sent += count
            if self.progress is not None:
                self.progress.update(self.done)


def opaque_etag(response):
    """True when the endpoint says the data is stored encrypted with SSE-KMS or SSE-C.

    Such ETags are not the MD5 of the data (AWS documents this); the Content-MD5 sent with the
    part is then what the endpoint checked the bytes against.
    """
    return (response.get("ServerSideEncryption") or "").startswith("aws:kms") or bool(response.get("SSECustomerAlgorithm"))


def send_part(client, bucket, key, upload_id, fd, path, number, offset, length, counter, stop):
    """Send one part with its Content-MD5; ``(number, ETag, MD5)``, the ETag checked to be the MD5 unless it is opaque."""
    if stop.is_set():
        return number, None, None
    return send_bytes(client, bucket, key, upload_id, number, read_part(fd, offset, length, path), counter)


def send_bytes(client, bucket, key, upload_id, number, data, counter):
    """Send part ``number`` held in memory; ``(number, ETag, MD5)`` as ``send_part``."""
    length = len(data)
    digest = hashlib.md5(data)  # nosec - S3 part integrity, not security
    response = client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data,
        ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
    )
    etag = (response.get("ETag") or "").strip('"')
    if etag != digest.hexdigest() and not opaque_etag(response):
        raise ReplicationError(
            "Failed to upload part %d of s3://%s/%s: the endpoint answered ETag %s, the part's MD5 is %s; retry the upload"
            % (number, bucket, key, etag, digest.hexdigest()), bucket=bucket, key=key,
        )
    counter.add(length)
    return number, etag, digest.hexdigest()


def _send_parts(client, bucket, key, upload_id, fd, path, todo, concurrency, counter):
    etags = {}
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(concurrency))) as pool:
        futures = [pool.submit(send_part, client, bucket, key, upload_id, fd, path, n, o, ln, counter, stop) for n, o, ln in todo]
        try:
            for future in concurrent.futures.as_completed(futures):
                number, etag, _md5 = future.result()
                etags[number] = etag
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return etags


def _result(key, size, sha256, head, parts, resumed, sent, started, changed):
    seconds = max(time.monotonic() - started, 1e-6)
    return {
        "key": key, "size": size, "sha256": sha256,
        "etag": head["etag"] if head else None,
        "metadata": head["metadata"] if head else {},
        "parts": parts, "resumed_parts": resumed, "uploaded_bytes": sent,
        "seconds": round(seconds, 3), "bytes_per_second": int(sent / seconds) if sent else 0,
        "changed": changed,
    }


def plan(client, bucket, key, path, sha256=None):
    """(sha256, existing head or None, upload needed?) - what an upload would do, changing nothing."""
    if not os.path.isfile(path):
        raise ReplicationError("Failed to read file %s: it does not exist or is not a regular file; check src" % path, src=path)
    sha256 = (sha256 or _files.sha256_file(path)).lower()
    existing = _cos.head(client, bucket, key)
    needed = existing is None or existing["metadata"].get("sha256") != sha256 or existing["size"] != os.path.getsize(path)
    return sha256, existing, needed


def upload(client, bucket, key, path, part_size, concurrency, metadata, sha256=None, progress=None, keep_incomplete=False):
    """Upload ``path`` to ``bucket``/``key`` unless an object with the same sha256 is there; returns the result dict."""
    started = time.monotonic()
    sha256, existing, needed = plan(client, bucket, key, path, sha256)
    size = os.path.getsize(path)
    if not needed:
        return _result(key, size, sha256, existing, 0, 0, 0, started, False)
    full_metadata = _cos.object_metadata(metadata, sha256)
    if progress is not None:
        progress.update(0, total=size, force=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if size < plan_part_size(size, part_size):
            data = read_part(fd, 0, size, path)
            digest = hashlib.md5(data)  # nosec - S3 integrity, not security
            client.put_object(
                Bucket=bucket, Key=key, Body=data, Metadata=full_metadata,
                ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
            )
            parts, resumed, sent = 1, 0, size
        else:
            parts, resumed, sent = _multipart(client, bucket, key, path, fd, size, part_size, concurrency, full_metadata, progress, keep_incomplete)
    finally:
        os.close(fd)
    stored = _cos.head(client, bucket, key)
    if stored is None or stored["size"] != size:
        raise ReplicationError("Failed to upload file %s to s3://%s/%s: the stored object has size %s, expected %d; retry the upload"
                               % (path, bucket, key, stored and stored["size"], size), bucket=bucket, key=key)
    if stored["metadata"].get("sha256") != sha256:
        # A resumed upload keeps the metadata it was created with: rewrite it in place.
        _cos.set_metadata(client, bucket, key, size, full_metadata)
        stored = _cos.head(client, bucket, key)
    if progress is not None:
        progress.finish()
    return _result(key, size, sha256, stored, parts, resumed, sent, started, True)


class _ReplaceRefused(Exception):
    """The endpoint would not let a stored part be replaced (rclone streams parts to its backend)."""


def _multipart(client, bucket, key, path, fd, size, part_size, concurrency, metadata, progress, keep_incomplete):
    upload_id, listed = find_resumable(client, bucket, key, keep_incomplete)
    try:
        return _attempt(client, bucket, key, path, fd, size, part_size, concurrency, metadata, progress, keep_incomplete, upload_id, listed)
    except _ReplaceRefused:
        # That upload cannot be finished with this file's content: start afresh (the old one is aborted).
        _cos.abort_upload(client, bucket, key, upload_id)
    return _attempt(client, bucket, key, path, fd, size, part_size, concurrency, metadata, progress, keep_incomplete, None, {})


def _attempt(client, bucket, key, path, fd, size, part_size, concurrency, metadata, progress, keep_incomplete, upload_id, listed):
    if listed:
        # Continue with the part size the interrupted upload used.
        part_size = max(part["size"] for part in listed.values())
    part_size = plan_part_size(size, part_size)
    ranges = part_ranges(size, part_size)
    kept = reusable_parts(fd, path, size, part_size, listed) if listed else {}
    replacing = any(number in listed for number, _o, _l in ranges if number not in kept)
    if upload_id is None:
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    resumed_bytes = sum(length for number, _offset, length in ranges if number in kept)
    counter = Counter(progress, resumed_bytes)
    try:
        etags = dict(kept)
        etags.update(_send_parts(client, bucket, key, upload_id, fd, path, [r for r in ranges if r[0] not in kept], concurrency, counter))
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": number, "ETag": '"%s"' % etags[number]} for number, _o, _l in ranges]},
        )
    except _cos.ClientError as exc:
        if replacing and _cos.error_code(exc) in ("NotImplemented", "InvalidPart", "InvalidRequest"):
            raise _ReplaceRefused() from exc
        _failed(client, bucket, key, upload_id, progress, keep_incomplete)
        raise
    except BaseException:
        _failed(client, bucket, key, upload_id, progress, keep_incomplete)
        raise
    return len(ranges), len(kept), counter.sent


def _failed(client, bucket, key, upload_id, progress, keep_incomplete):
    if progress is not None:
        progress.finish("failed")
    if not keep_incomplete:
        try:
            _cos.abort_upload(client, bucket, key, upload_id)
        except Exception:  # pylint: disable=broad-except
            pass  # the original failure is the one to report
