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

import http.server
import json
import secrets
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape

from tests.peers.ports import free_port
from tests.peers.s3_front import S3Front

DENIED = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
          '<Resource>%s</Resource><RequestId>iam-peer</RequestId></Error>')


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class IamPeer(S3Front):
    """The token service and the bearer S3 front (``s3_endpoint``), each on a free 127.0.0.1 port; a context manager."""

    def __init__(self, api_key, upstream, token_seconds=3600):
        super().__init__(upstream)
        self.api_key = api_key
        self.token_seconds = token_seconds
        self.tokens = {}  # token -> expiry (monotonic)
        self.issued = 0
        self.denied = 0
        self.service_instance_ids = set()
        self._token_server = None

    @property
    def token_url(self):
        return "http://127.0.0.1:%d/identity/token" % self._token_server.server_address[1]

    @property
    def s3_endpoint(self):
        return self.endpoint

    def __enter__(self):
        self._token_server = _Server(("127.0.0.1", free_port()), self._token_handler())
        threading.Thread(target=self._token_server.serve_forever, daemon=True).start()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._token_server.shutdown()
        self._token_server.server_close()

    def _issue(self, form):
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"] or form.get("apikey") != [self.api_key]:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.", "context": {}}
        token = secrets.token_urlsafe(48)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_seconds
            self.issued += 1
        return 200, {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer", "expires_in": self.token_seconds,
                     "expiration": int(time.time()) + self.token_seconds, "scope": "ibm openid"}

    def admit(self, method, path, headers):
        authorization = headers.get("Authorization", "")
        token = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else None
        with self.lock:
            valid = token is not None and self.tokens.get(token, 0) > time.monotonic()
            if not valid:
                self.denied += 1
                return 403, {"Content-Type": "application/xml"}, (DENIED % escape(path)).encode()
            if headers.get("ibm-service-instance-id"):
                self.service_instance_ids.add(headers["ibm-service-instance-id"])
        return None

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
