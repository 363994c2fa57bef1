"""A reverse proxy in front of a real S3 server that can be told to fail multipart part uploads.

Every request is forwarded as it came (method, path and query, headers, body streamed with its
Content-Length) to the upstream server, the Host header included: the client signed its SigV4
request for the proxy's host:port, and the upstream verifies the signature against the Host
header it receives, so nothing is re-signed. Only hop-by-hop headers (Connection, Keep-Alive,
Expect ...) are not forwarded; none of them is signed.

``fail_parts_after(n)`` lets the next ``n`` UploadPart requests (PUT with ``partNumber=`` and
``uploadId=`` in the query, not a part copy) through and answers every later one with HTTP 403
``AccessDenied`` and an S3 XML error body, which ibm-cos-sdk does not retry. ``heal()`` stops
failing. The proxy counts the UploadPart requests it forwarded and those it refused.

    with FaultyS3(upstream_endpoint) as proxy:
        proxy.fail_parts_after(2)
        ...  # point the client at proxy.endpoint
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse

from tests.peers.ports import free_port

# Not forwarded (RFC 9110 7.6.1 hop-by-hop headers, plus Expect: the proxy answers 100-continue itself).
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "upgrade", "expect"))
BLOCK = 1 << 16

ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Access Denied (injected by tests.peers.faulty_s3: part %d refused)</Message>"
    "<Resource>%s</Resource><RequestId>faulty-s3-%d</RequestId></Error>"
)


def is_upload_part(method, query, headers):
    """UploadPart: a PUT of one part of a multipart upload (UploadPartCopy has x-amz-copy-source)."""
    if method != "PUT" or "x-amz-copy-source" in headers:
        return False
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    return "partNumber" in params and "uploadId" in params


class FaultyS3:
    """Threaded reverse proxy on a free 127.0.0.1 port; use as a context manager (or call start/stop)."""

    def __init__(self, upstream, host="127.0.0.1"):
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http":
            raise ValueError("FaultyS3 forwards plain http only, not %r" % upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.host = host
        self.port = None
        self._lock = threading.Lock()
        self._allowed = None  # None: never fail; else how many more UploadPart requests pass
        self.forwarded_parts = []  # partNumber of every UploadPart forwarded, in arrival order
        self.refused_parts = []  # partNumber of every UploadPart answered with AccessDenied
        self.requests = 0
        self._server = None
        self._thread = None

    # --- control -----------------------------------------------------------------------------

    @property
    def endpoint(self):
        return "http://%s:%d" % (self.host, self.port)

    def fail_parts_after(self, count):
        """Let ``count`` more UploadPart requests through, then refuse every later one."""
        with self._lock:
            self._allowed = int(count)

    def heal(self):
        with self._lock:
            self._allowed = None

    def reset_counts(self):
        with self._lock:
            self.forwarded_parts = []
            self.refused_parts = []
            self.requests = 0

    def _decide(self, part_number):
        """True when this UploadPart is to be forwarded (and counts it either way)."""
        with self._lock:
            if self._allowed is not None and self._allowed <= 0:
                self.refused_parts.append(part_number)
                return False
            if self._allowed is not None:
                self._allowed -= 1
            self.forwarded_parts.append(part_number)
            return True

    # --- life --------------------------------------------------------------------------------

    def start(self):
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.port = free_port(self.host)
        self._server = http.server.ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="faulty-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue answered before the body is read
    timeout = 60  # an idle kept-alive client connection does not hold its thread forever
    owner: FaultyS3

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def _any(self):
        self.owner.requests += 1
        path, _sep, query = self.path.partition("?")
        headers = {name.lower() for name in self.headers.keys()}
        if is_upload_part(self.command, query, headers):
            number = int(urllib.parse.parse_qs(query)["partNumber"][0])
            if not self.owner._decide(number):
                self._discard_body()
                self._refuse(path, number)
                return
        self._forward()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815 - the names BaseHTTPRequestHandler calls

    # --- request body ------------------------------------------------------------------------

    def _chunked(self):
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _body_blocks(self):
        """The request body as it came on the wire: Content-Length bytes, or the raw chunked framing."""
        if self._chunked():
            while True:
                line = self.rfile.readline()
                yield line
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers (aws-chunked checksums may come here), then the empty line
                        trailer = self.rfile.readline()
                        yield trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return
                left = size + 2  # the data and its CRLF
                while left:
                    block = self.rfile.read(min(BLOCK, left))
                    if not block:
                        raise ConnectionError("client closed the connection inside a chunk")
                    left -= len(block)
                    yield block
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            block = self.rfile.read(min(BLOCK, left))
            if not block:
                raise ConnectionError("client closed the connection inside the body")
            left -= len(block)
            yield block

    def _discard_body(self):
        for _block in self._body_blocks():
            pass

    # --- answers -----------------------------------------------------------------------------

    def _refuse(self, path, number):
        body = (ERROR_BODY % (number, path, number)).encode("utf-8")
        self.send_response_only(403, "Forbidden")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "faulty-s3-%d" % number)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _forward(self):
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=300)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():  # the client's Host header too: it is signed
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders()
            for block in self._body_blocks():
                conn.send(block)
            response = conn.getresponse()
            self._relay(response)
        finally:
            conn.close()

    def _relay(self, response):
        headers = [(n, v) for n, v in response.getheaders() if n.lower() not in HOP_BY_HOP and n.lower() != "transfer-encoding"]
        has_length = any(n.lower() == "content-length" for n, _value in headers)
        bodiless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        body = None
        if not has_length and not bodiless:  # the upstream sent it chunked: buffer it to give its length
            body = response.read()
            headers.append(("Content-Length", str(len(body))))
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if bodiless:
            response.read()
        elif body is not None:
            self.wfile.write(body)
        else:
            for block in iter(lambda: response.read(BLOCK), b""):
                self.wfile.write(block)
        self.wfile.flush()
