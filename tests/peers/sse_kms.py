"""A bucket with SSE-KMS default encryption, in front of a real S3 server: ETags that are not MD5s.

AWS S3 documents that objects (and parts) encrypted with SSE-KMS or SSE-C have ETags that are not
the MD5 of their data, and answers such writes with ``x-amz-server-side-encryption: aws:kms``. No
local server does either, so this front gives every ETag the real server returns an opaque stand-in
(a keyed hash, with the ``-<parts>`` suffix of multipart objects kept), in headers and XML bodies
alike, and maps the stand-ins back where the client sends them (CompleteMultipartUpload).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from tests.peers.s3_front import S3Front

_ETAG = re.compile(r"(?:&quot;|\")?([0-9a-f]{32})(-\d+)?(?:&quot;|\")?")
_ETAG_ELEMENT = re.compile(r"(<ETag>)([^<]*)(</ETag>)")


class KmsBucketFront(S3Front):
    """Every ETag answered is opaque; writes are answered as SSE-KMS encrypted."""

    def __init__(self, upstream, key_id="arn:aws:kms:us-south:000000000000:key/vmimage-test"):
        super().__init__(upstream)
        self.key_id = key_id
        self._salt = secrets.token_bytes(16)
        self.to_real = {}

    def opaque(self, real):
        digest = hashlib.md5(self._salt + real.encode()).hexdigest()  # nosec - a stand-in, not security
        with self.lock:
            self.to_real[digest] = real
        return digest

    def _swap(self, text, mapping):
        def one(match):
            return '"%s%s"' % (mapping(match.group(1)), match.group(2) or "")
        return _ETAG.sub(one, text)

    def rewrite_request(self, method, path, headers, body):
        if method == "POST" and "uploadId=" in path and body:  # CompleteMultipartUpload names the parts by ETag
            with self.lock:
                real = dict(self.to_real)
            text = _ETAG_ELEMENT.sub(lambda m: m.group(1) + self._swap(m.group(2), lambda e: real.get(e, e)) + m.group(3), body.decode())
            return text.encode()
        return body

    def rewrite_response(self, method, path, status, headers, body):
        headers = dict(headers)
        for name in list(headers):
            if name.lower() == "etag":
                headers[name] = self._swap(headers[name], self.opaque)
        if body and b"<ETag>" in body:
            body = _ETAG_ELEMENT.sub(lambda m: m.group(1) + self._swap(m.group(2), self.opaque).replace('"', "&quot;") + m.group(3),
                                     body.decode()).encode()
        if 200 <= status < 300 and method in ("PUT", "POST", "GET", "HEAD"):
            headers["x-amz-server-side-encryption"] = "aws:kms"
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.key_id
        return status, headers, body
