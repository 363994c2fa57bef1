# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Multipart upload of a file that is still growing: each part is sent as soon as its bytes are final.

The file is a QCOW2 being written front to back (``_qcow2.StreamWriter``) whose
first bytes are written last, so part 1 is sent last. Parts are verified like
every upload of this collection (Content-MD5, ETag = MD5). An interrupted upload
of the same key is continued: the conversion is deterministic, so a listed part
whose MD5 equals the new bytes is kept instead of sent. When a listed part does
not match (the endpoint may refuse to replace it), the old upload is aborted and
a fresh one receives every part so far from the local file.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def multipart_etag(md5_hexdigests):
    """The ETag S3 gives an object completed from parts with these MD5s: md5(concatenated digests)-count."""
    joined = b"".join(bytes.fromhex(digest) for digest in md5_hexdigests)
    return "%s-%d" % (hashlib.md5(joined).hexdigest(), len(md5_hexdigests))  # nosec - S3's ETag, not security


class GrowingUpload:
    """Upload parts of ``path`` (open at ``fd``) while it is appended to; see the module docstring."""

    def __init__(self, client, bucket, key, path, fd, part_size, concurrency, metadata, resume=(None, None), front=0):
        if part_size < front:
            raise ValueError("part 1 (%d bytes) must hold the whole front of the file (%d bytes): it is written last" % (part_size, front))
        self.client, self.bucket, self.key, self.path, self.fd = client, bucket, key, path, fd
        self.part_size = part_size
        self.metadata = metadata
        self.upload_id, self.listed = resume
        self.listed = self.listed or {}
        self.kept = {}  # part number -> etag of a listed part reused
        self.sent_bytes = 0
        self._ranges = {}  # part number -> (offset, length) scheduled
        self._futures = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(concurrency)))
        self._counter = _multipart.Counter(None, 0)

    # -- scheduling --

    def on_final(self, position):
        """Bytes before ``position`` are final (except part 1): send every whole part among them."""
        number = len(self._ranges) + 2
        while number * self.part_size <= position:
            self._schedule(number, (number - 1) * self.part_size, self.part_size)
            number += 1
        self._raise_failed()

    def _schedule(self, number, offset, length):
        if number > _multipart.MAX_PARTS:
            raise ReplicationError("Failed to upload s3://%s/%s: the image outgrew %d parts of %d bytes; raise part_size_mb"
                                   % (self.bucket, self.key, _multipart.MAX_PARTS, self.part_size), bucket=self.bucket, key=self.key)
        self._ranges[number] = (offset, length)
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, Metadata=self.metadata)["UploadId"]
        listed = self.listed.get(number)
        if listed is not None and listed["size"] == length:
            digest = hashlib.md5(_multipart.read_part(self.fd, offset, length, self.path)).hexdigest()  # nosec - part integrity
            if digest == listed["etag"]:
                self.kept[number] = digest
                return
            self._start_afresh()
            return
        self._submit(number, offset, length)

    def _submit(self, number, offset, length):
        self._futures[number] = self._pool.submit(_multipart.send_part, self.client, self.bucket,
                                                  self.key, self.upload_id, self.fd, self.path, number, offset, length, self._counter, self._stop)

    def _start_afresh(self):
        """A listed part differs from the new bytes: abort that upload, send everything to a new one."""
        for future in self._futures.values():
            future.result()
        _cos.abort_upload(self.client, self.bucket, self.key, self.upload_id)
        self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, Metadata=self.metadata)["UploadId"]
        self.listed, self.kept, self._futures = {}, {}, {}
        for number, (offset, length) in sorted(self._ranges.items()):
            self._submit(number, offset, length)

    def _raise_failed(self):
        for future in list(self._futures.values()):
            if future.done() and future.exception() is not None:
                raise future.exception()

    # -- the end --

    def send_rest(self, size):
        """The file is complete at ``size`` bytes: schedule the last part and part 1. False when one part holds it all."""
        if size <= self.part_size and not self._ranges:
            return False
        self.on_final(size)
        tail = len(self._ranges) + 2
        if (tail - 1) * self.part_size < size:
            self._schedule(tail, (tail - 1) * self.part_size, size - (tail - 1) * self.part_size)
        self._schedule(1, 0, self.part_size)
        return True

    def complete(self):
        """Wait for every part, complete the upload and check the ETag it got; the parts' MD5s, in order."""
        etags = dict(self.kept)
        md5s = dict(self.kept)
        for number, future in self._futures.items():
            _number, etags[number], md5s[number] = future.result()
        numbers = sorted(self._ranges)
        if numbers != list(range(1, len(numbers) + 1)) or set(etags) != set(numbers):
            raise ReplicationError("Failed to upload s3://%s/%s: parts %s were not all sent; retry the upload" % (self.bucket, self.key, numbers))
        answer = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": '"%s"' % etags[n]} for n in numbers]},
        )
        self.sent_bytes = self._counter.sent
        stored = (answer.get("ETag") or "").strip('"')
        expected = multipart_etag([md5s[n] for n in numbers])
        md5_etags = all(etags[n] == md5s[n] for n in numbers)  # not so with SSE-KMS or SSE-C
        if md5_etags and stored.endswith("-%d" % len(numbers)) and stored != expected:  # an S3-style multipart ETag must be ours
            raise ReplicationError("Failed to upload s3://%s/%s: the endpoint completed it with ETag %s, the parts sent make %s; retry the upload"
                                   % (self.bucket, self.key, stored, expected), bucket=self.bucket, key=self.key)
        return [md5s[n] for n in numbers]

    def close(self, abort):
        """Stop sending; abort the multipart upload when ``abort`` (its failure is not the one to report)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.sent_bytes = self._counter.sent
        if abort and self.upload_id is not None:
            try:
                _cos.abort_upload(self.client, self.bucket, self.key, self.upload_id)
            except Exception:  # pylint: disable=broad-except
                pass
