# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Multipart upload of a file that is still being written, from memory: no local spool.

The file is a QCOW2 written front to back (``_qcow2.StreamWriter``) whose first
bytes (header and tables) are written last. Part 1 is the front alone (at least
5 MiB), held in memory until the end; every later part is cut from the stream as
soon as it is whole and sent from memory, with at most ``memory_budget`` bytes of
parts in flight (the writer waits when that is reached). Parts are verified like
every upload of this collection (Content-MD5, ETag = MD5).

An interrupted upload of the same key is continued: the conversion is
deterministic, so a listed part whose size and MD5 equal the new bytes is kept
instead of sent. A listed part that differs raises ``PartsDiffer``: the bytes of
the parts before it are gone (nothing is spooled), so the caller aborts that
upload and converts again into a fresh one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import threading

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MEMORY_BUDGET = 96 * _multipart.MIB  # parts in flight, besides part 1 and the part being filled


def multipart_etag(md5_hexdigests):
    """The ETag S3 gives an object completed from parts with these MD5s: md5(concatenated digests)-count."""
    joined = b"".join(bytes.fromhex(digest) for digest in md5_hexdigests)
    return "%s-%d" % (hashlib.md5(joined).hexdigest(), len(md5_hexdigests))  # nosec - S3's ETag, not security


def front_part_size(front):
    """Part 1: the front of the file (written last), and at least S3's smallest part."""
    return max(_multipart.MIN_PART, int(front))


class PartsDiffer(Exception):
    """A part of the interrupted upload differs from the bytes this run makes: that upload cannot be continued."""


class StreamedUpload:
    """Collects the output of a ``StreamWriter`` (``write``, ``pwrite``) and uploads it part by part; see the module docstring."""

    def __init__(self, client, bucket, key, part_size, concurrency, metadata, resume=(None, None), front=0, memory_budget=MEMORY_BUDGET):
        self.client, self.bucket, self.key = client, bucket, key
        self.part_size = int(part_size)
        self.front_size = front_part_size(front)
        self.metadata = metadata
        self.upload_id, self.listed = resume
        self.listed = self.listed or {}
        self.position = 0
        self.kept = {}  # part number -> md5 of a listed part reused
        self.sizes = {}  # part number -> length
        self.md5s = {}  # part number -> md5 of the bytes made (sent or kept)
        self.sent_bytes = 0
        self.completed = False
        self._front = bytearray(self.front_size)
        self._current = bytearray()
        self._next = 2
        self._budget = max(self.part_size, min(int(memory_budget), int(concurrency) * self.part_size))
        self._in_flight = collections.deque()  # (length, future), oldest first
        self._futures = {}
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(concurrency)))
        self._counter = _multipart.Counter(None, 0)

    # -- what the writer calls --

    def write(self, data):
        """Append ``data`` to the output; each part that becomes whole is sent (part 1 waits for the end)."""
        view = memoryview(data)
        while view:
            if self.position < self.front_size:
                count = min(len(view), self.front_size - self.position)
                self._front[self.position:self.position + count] = view[:count]
            else:
                count = min(len(view), self.part_size - len(self._current))
                self._current += view[:count]
                if len(self._current) == self.part_size:
                    self._cut()
            self.position += count
            view = view[count:]

    def pwrite(self, data, offset):
        """Fill the front (the header and tables, written last); nothing past part 1 is ever rewritten."""
        if offset + len(data) > self.front_size:
            raise ValueError("only part 1 (%d bytes) can be rewritten, not %d bytes at %d" % (self.front_size, len(data), offset))
        self._front[offset:offset + len(data)] = data

    def front_bytes(self, size):
        """The first ``size`` bytes of a file that fits in part 1."""
        return bytes(self._front[:size])

    # -- sending --

    def _cut(self):
        data, self._current = self._current, bytearray()  # handed over, not copied
        number, self._next = self._next, self._next + 1
        self._schedule(number, data)

    def _schedule(self, number, data):
        if number > _multipart.MAX_PARTS:
            raise ReplicationError("Failed to upload s3://%s/%s: the image outgrew %d parts of %d bytes; raise part_size_mb"
                                   % (self.bucket, self.key, _multipart.MAX_PARTS, self.part_size), bucket=self.bucket, key=self.key)
        self._raise_failed()
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, Metadata=self.metadata)["UploadId"]
        self.sizes[number] = len(data)
        digest = hashlib.md5(data).hexdigest()  # nosec - S3 part integrity
        self.md5s[number] = digest
        listed = self.listed.get(number)
        if listed is not None:
            if listed["size"] == len(data) and listed["etag"] == digest:
                self.kept[number] = digest
                return
            raise PartsDiffer(number)
        while self._in_flight and sum(length for length, _future in self._in_flight) + len(data) > self._budget:
            self._in_flight.popleft()[1].result()  # back-pressure: memory stays bounded whatever the disk size
        future = self._pool.submit(self._send, number, data)
        self._futures[number] = future
        self._in_flight.append((len(data), future))

    def _send(self, number, data):
        if self._stop.is_set():
            return number, None, None
        return _multipart.send_bytes(self.client, self.bucket, self.key, self.upload_id, number, data, self._counter)

    def _raise_failed(self):
        for future in list(self._futures.values()):
            if future.done() and future.exception() is not None:
                raise future.exception()

    # -- the end --

    def send_rest(self, size):
        """The file is complete at ``size`` bytes: send the last part and part 1. False when part 1 holds it all (one PUT)."""
        if size != self.position:
            raise ValueError("the writer reports %d bytes, %d were written" % (size, self.position))
        if size <= self.front_size and not self.sizes:
            return False
        if self._current:
            self._cut()
        self._schedule(1, self._front)
        return True

    def part_ranges(self):
        """``[(number, offset, length)]`` of the parts made, in order."""
        ranges, offset = [], 0
        for number in sorted(self.sizes):
            ranges.append((number, offset, self.sizes[number]))
            offset += self.sizes[number]
        return ranges

    def complete(self):
        """Wait for every part, check the stored parts against the bytes made, complete, check the ETag; the parts' MD5s."""
        etags = dict(self.kept)
        for number, future in self._futures.items():
            _number, etags[number], md5 = future.result()
            if md5 != self.md5s[number]:
                raise ReplicationError("Failed to upload part %d of s3://%s/%s: it was not sent; retry the upload" % (number, self.bucket, self.key))
        numbers = sorted(self.sizes)
        if numbers != list(range(1, len(numbers) + 1)) or set(etags) != set(numbers):
            raise ReplicationError("Failed to upload s3://%s/%s: parts %s were not all sent; retry the upload" % (self.bucket, self.key, numbers))
        self._check_listed(numbers, etags)
        answer = self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": '"%s"' % etags[n]} for n in numbers]},
        )
        self.completed = True  # the object exists now: a failure from here on must remove it
        self.sent_bytes = self._counter.sent
        stored = (answer.get("ETag") or "").strip('"')
        expected = multipart_etag([self.md5s[n] for n in numbers])
        md5_etags = all(etags[n] == self.md5s[n] for n in numbers)  # not so with SSE-KMS or SSE-C
        if md5_etags and stored.endswith("-%d" % len(numbers)) and stored != expected:  # an S3-style multipart ETag must be ours
            raise ReplicationError("Failed to upload s3://%s/%s: the endpoint completed it with ETag %s, the parts sent make %s; retry the upload"
                                   % (self.bucket, self.key, stored, expected), bucket=self.bucket, key=self.key)
        return [self.md5s[n] for n in numbers]

    def _check_listed(self, numbers, etags):
        """What the endpoint holds before completing: every part, of the size made and with the ETag the endpoint gave it
        when it was sent (checked then against its MD5, unless opaque as with SSE-KMS): a part replaced meanwhile is caught."""
        listed = _multipart.list_parts(self.client, self.bucket, self.key, self.upload_id)
        for number in numbers:
            part = listed.get(number)
            if part is None or part["size"] != self.sizes[number] or part["etag"] != etags[number]:
                raise ReplicationError(
                    "Failed to upload s3://%s/%s: part %d stored on the endpoint (%s) is not the part sent (%d bytes, MD5 %s); retry the upload"
                    % (self.bucket, self.key, number, part and "%d bytes, ETag %s" % (part["size"], part["etag"]) or "missing",
                       self.sizes[number], self.md5s[number]), bucket=self.bucket, key=self.key)

    def close(self, abort):
        """Stop sending; abort the multipart upload when ``abort`` (its failure is not the one to report)."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.sent_bytes = self._counter.sent
        self._front = self._current = None
        self._in_flight.clear()
        if abort and self.upload_id is not None:
            try:
                _cos.abort_upload(self.client, self.bucket, self.key, self.upload_id)
            except Exception:  # pylint: disable=broad-except
                pass
