"""IBM Cloud IAM for the tests: a token service, and an S3 front that takes IAM bearer tokens like IBM COS.

IBM COS authenticates an API-key client with an IAM access token: ibm-cos-sdk posts the API key
to the IAM token endpoint (``grant_type=urn:ibm:params:oauth:grant-type:apikey``), then sends
``Authorization: Bearer <token>`` on every request, plus ``ibm-service-instance-id`` where a
request creates or lists buckets. No local S3 server takes bearer tokens, so ``BearerS3`` does what
COS does at its edge: it checks the token (issued by this IAM, not expired), answers 403
AccessDenied otherwise, and passes the request on to a real S3 server signed with that server's
HMAC keys (SigV4). The token service answers like IAM: 400 ``BXNIM0415E`` for an unknown API key,
and counts the tokens it issued.

    with IamPeer(api_key, upstream) as iam:
        cos = dict(endpoint=iam.s3_endpoint, api_key=api_key, service_instance_id="crn:...", iam_endpoint=iam.token_url)
"""

from __future__ import annotations

import http.client
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

from ibm_botocore.auth import S3SigV4Auth
from ibm_botocore.awsrequest import AWSRequest
from ibm_botocore.credentials import Credentials

from tests.peers.ports import free_port

# Not passed on: hop-by-hop headers, and what the front replaces (the client's authentication).
DROPPED = frozenset(("connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "expect", "host", "authorization",
                     "x-amz-date", "x-amz-content-sha256", "x-amz-security-token", "ibm-service-instance-id", "content-length"))
DENIED = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
          '<Resource>%s</Resource><RequestId>iam-peer</RequestId></Error>')


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class IamPeer:
    """The token service and the bearer S3 front, each on a free 127.0.0.1 port; a context manager."""

    def __init__(self, api_key, upstream, token_seconds=3600):
        self.api_key = api_key
        self.upstream = upstream  # tests.peers.s3.S3Server
        self.token_seconds = token_seconds
        self.tokens = {}  # token -> expiry (monotonic)
        self.issued = 0
        self.denied = 0
        self.service_instance_ids = set()
        self._lock = threading.Lock()
        self._servers = []

    @property
    def token_url(self):
        return "http://127.0.0.1:%d/identity/token" % self._servers[0].server_address[1]

    @property
    def s3_endpoint(self):
        return "http://127.0.0.1:%d" % self._servers[1].server_address[1]

    def __enter__(self):
        for handler in (self._token_handler(), self._s3_handler()):
            server = _Server(("127.0.0.1", free_port()), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc):
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _issue(self, form):
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"] or form.get("apikey") != [self.api_key]:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.", "context": {}}
        token = secrets.token_urlsafe(48)
        with self._lock:
            self.tokens[token] = time.monotonic() + self.token_seconds
            self.issued += 1
        return 200, {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer", "expires_in": self.token_seconds,
                     "expiration": int(time.time()) + self.token_seconds, "scope": "ibm openid"}

    def _valid(self, authorization):
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else None
        with self._lock:
            return token is not None and self.tokens.get(token, 0) > time.monotonic()

    def _token_handler(self):
        peer = self

        class Token(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                status, answer = peer._issue(urllib.parse.parse_qs(body))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        return Token

    def _s3_handler(self):
        peer = self

        class Front(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _relay(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not peer._valid(self.headers.get("Authorization", "")):
                    with peer._lock:
                        peer.denied += 1
                    return self._answer(403, {"Content-Type": "application/xml"}, (DENIED % escape(self.path)).encode())
                if self.headers.get("ibm-service-instance-id"):
                    peer.service_instance_ids.add(self.headers["ibm-service-instance-id"])
                return self._answer(*peer._forward(self.command, self.path, self.headers, body))

            def _answer(self, status, headers, data):
                self.send_response(status)
                length = str(len(data))
                for name, value in headers.items():
                    if name.lower() == "content-length" and self.command == "HEAD":
                        length = value  # the size of the object, whose body a HEAD answer does not carry
                    elif name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's naming
        return Front

    def _forward(self, method, path, headers, body):
        """Sign the request with the upstream server's HMAC keys and send it there; (status, headers, body)."""
        upstream = urllib.parse.urlsplit(self.upstream.endpoint)
        kept = {name: value for name, value in headers.items() if name.lower() not in DROPPED}
        request = AWSRequest(method=method, url=self.upstream.endpoint + path, headers=kept, data=body)
        credentials = Credentials(self.upstream.access_key_id, self.upstream.secret_access_key)
        S3SigV4Auth(credentials, "s3", self.upstream.region).add_auth(request)
        connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=dict(request.headers.items()))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()
