"""A front for a real S3 server that re-signs what it passes on: the base of the IAM and SSE-KMS emulators.

Local S3 servers take HMAC (SigV4) requests only and give every object an MD5 ETag. To test
what real endpoints do beyond that, a front stands before the real server: it decides whether to
admit each request (``admit``), may change the request body (``rewrite_request``) and the answer
(``rewrite_response``), and signs what it passes on with the real server's own keys, so the
server checks a valid signature whatever the client sent.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse

from ibm_botocore.auth import S3SigV4Auth
from ibm_botocore.awsrequest import AWSRequest
from ibm_botocore.credentials import Credentials

from tests.peers.ports import free_port

# Not passed on: hop-by-hop headers, and what the front replaces (the client's authentication).
DROPPED = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect", "host", "authorization",
                     "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "ibm-service-instance-id", "content-length"))


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class S3Front:
    """Subclass and override ``admit``/``rewrite_request``/``rewrite_response``; a context manager on a free 127.0.0.1 port."""

    def __init__(self, upstream):
        self.upstream = upstream  # tests.peers.s3.S3Server
        self.lock = threading.Lock()
        self._server = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    def __enter__(self):
        self._server = _Server(("127.0.0.1", free_port()), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    # -- what subclasses change --

    def admit(self, method, path, headers):
        """None to pass the request on, or the answer ``(status, headers, body)`` to give instead."""
        return None

    def rewrite_request(self, method, path, headers, body):
        return body

    def rewrite_response(self, method, path, status, headers, body):
        return status, headers, body

    # -- the plumbing --

    def forward(self, method, path, headers, body):
        """Sign the request with the real server's keys and send it there; ``(status, headers, body)``."""
        upstream = urllib.parse.urlsplit(self.upstream.endpoint)
        kept = {name: value for name, value in headers.items() if name.lower() not in DROPPED}
        request = AWSRequest(method=method, url=self.upstream.endpoint + path, headers=kept, data=body)
        S3SigV4Auth(Credentials(self.upstream.access_key_id, self.upstream.secret_access_key), "s3", self.upstream.region).add_auth(request)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=dict(request.headers.items()))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def _handler(self):
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = front.admit(self.command, self.path, self.headers)
                if answer is None:
                    body = front.rewrite_request(self.command, self.path, self.headers, body)
                    answer = front.rewrite_response(self.command, self.path, *front.forward(self.command, self.path, self.headers, body))
                self._answer(*answer)

            def _answer(self, status, headers, data):
                self.send_response(status)
                length = str(len(data))
                for name, value in headers.items():
                    if name.lower() == "content-length" and self.command == "HEAD":
                        length = value  # the size of the object, whose body a HEAD answer does not carry
                    elif name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's naming
        return Handler


class RegionalFront(S3Front):
    """Buckets that live in ``location`` (IBM COS style, for example ``eu-de-standard``): what GetBucketLocation answers.

    Neither local server records a bucket's region; IBM COS and AWS answer it, and the modules check it.
    """

    def __init__(self, upstream, location):
        super().__init__(upstream)
        self.location = location

    def rewrite_response(self, method, path, status, headers, body):
        if method == "GET" and status == 200 and urllib.parse.urlsplit(path).query in ("location", "location="):
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/">%s'
                    "</LocationConstraint>" % self.location).encode()
            headers = dict(headers, **{"Content-Type": "application/xml"})
        return status, headers, body
