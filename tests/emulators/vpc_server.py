# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The core of an IBM Cloud VPC API emulator that the real ``ibm-vpc`` SDK talks to over HTTP.

Paths are ``/<region>/v1/...`` (give the SDK ``service_url=<url>/<region>/v1``); the IAM token
endpoint is ``/identity/token`` on the same port and issues JWT access tokens (the SDK's
IAMAuthenticator reads ``exp``/``iat``) that expire after ``token_seconds``; an expired token gets 401.
Errors have the VPC shape ``{"errors": [{"code", "message", "more_info"}], "trace", "status_code"}``.

The core holds the HTTP server, IAM, version/generation checks, pagination, lifecycles, fault
injection and dispatch. Resources live in modules (``RESOURCE_MODULES``); each exposes
``register(emulator)`` which calls:

- ``emulator.route(method, "/volumes/{id}", handler)``: ``handler(region, params, query, body, headers)``
  returns ``(status, payload)`` or ``(status, payload, headers)``; ``query`` maps a name to its
  first value; raise ``ApiError`` for errors. A handler runs under ``emulator.lock``.
- ``emulator.control(method, "/volumes/{id}/bytes", handler)``: a test helper under ``/_emulator``
  (same port, no token: 127.0.0.1 only); ``handler(params, query, body)``, body raw bytes.
- shared state: ``emulator.store[kind]`` (id -> record; keys starting with ``_`` are private and never
  sent), ``emulator.data_dir``, ``emulator.by_id_dir``, ``emulator.s3`` (dict: endpoint and keys of the
  test S3 server, for image imports), ``emulator.delay``, ``emulator.new_record`` / ``emulator.later`` /
  ``emulator.settle`` (lifecycles), ``emulator.page`` (pagination), ``emulator.find`` (404 per kind).
"""

from __future__ import annotations

import datetime
import http.server
import importlib
import json
import re
import threading
import time
import urllib.parse
import uuid

import jwt

ACCOUNT = "aa2432b1fa4d4ace891e9b80fc104e34"
RESOURCE_GROUP = "fee82deba12e4c0fb69c3b09d1f12345"
RESOURCE_MODULES = ("tests.emulators.vpc_storage", "tests.emulators.vpc_compute", "tests.emulators.vpc_network",
                    "tests.emulators.vpc_images")
TOKEN_LEEWAY = 1  # seconds past exp a token is still taken (see _check_token)
TICK = 0.05  # seconds between lifecycle sweeps: an attachment's device appears without anyone reading the API
VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MORE_INFO = "https://cloud.ibm.com/docs/vpc?topic=vpc-rias-error-messages"
# The VPC API refuses a version before this date or after today (UTC): invalid_version_range.
OLDEST_VERSION = "2019-01-01"


def now_text():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None, target=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.target = status, code, message, headers or {}, target


def public(record):
    """A record as the API shows it: private ``_`` keys left out, nested dicts too."""
    if isinstance(record, dict):
        return {key: public(value) for key, value in record.items() if not key.startswith("_")}
    if isinstance(record, list):
        return [public(item) for item in record]
    return record


def _pattern(path):
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")


class VpcEmulator:
    def __init__(self, api_key, regions=("us-south", "eu-de"), token_seconds=3600, delay=0.2, data_dir=None,
                 by_id_dir=None, s3=None):
        self.api_key, self.regions, self.token_seconds, self.delay = api_key, list(regions), token_seconds, delay
        self.data_dir, self.by_id_dir, self.s3 = data_dir, by_id_dir, dict(s3 or {})
        self.lock = threading.RLock()
        self.store = {}  # kind -> {id: record}
        self.faults = []  # [method, regex, status, remaining, retry_after, code]
        self.failures = {}  # kind -> how many of the next lifecycles of that kind end in "failed"
        self.quotas = {}  # kind -> how many records of that kind a region may hold
        self.tokens_issued, self.valid_tokens = 0, set()  # token ids (jti) not yet revoked by expire_tokens()
        self.requests = []  # (method, path, status) of every API call
        self.secret = uuid.uuid4().hex
        self.routes, self.controls, self.stop_hooks = [], [], []
        self._server, self._ticking = None, threading.Event()
        for name in RESOURCE_MODULES:
            importlib.import_module(name).register(self)
        importlib.import_module("tests.emulators.vpc_control").register_controls(self)

    # -- registration (for resource modules) ------------------------------------------------
    def route(self, method, path, handler):
        self.routes.append((method.upper(), _pattern(path), handler))

    def control(self, method, path, handler):
        self.controls.append((method.upper(), _pattern(path), handler))

    def on_stop(self, hook):
        """``hook()`` runs at stop(): free loop devices, links, files."""
        self.stop_hooks.append(hook)

    # -- lifecycle of the server ---------------------------------------------------------------
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    @property
    def iam_url(self):
        return self.url

    def service_url(self, region):
        return "%s/%s/v1" % (self.url, region)

    def start(self, port=0):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._tick, daemon=True).start()
        return self

    def _tick(self):
        while not self._ticking.wait(TICK):
            with self.lock:
                for kind in list(self.store):
                    for rec in list(self.store[kind].values()):
                        self.settle(rec)

    def stop(self):
        self._ticking.set()
        with self.lock:
            for hook in self.stop_hooks:
                hook()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- helpers shared by the resource modules --------------------------------------------------
    def crn(self, region, kind, rid):
        return "crn:v1:bluemix:public:is:%s:a/%s::%s:%s" % (region, ACCOUNT, kind, rid)

    @staticmethod
    def zone_region(zone):
        return zone.rsplit("-", 1)[0]

    def zone_ref(self, region, zone):
        return {"name": zone, "href": self.service_url(region) + "/regions/%s/zones/%s" % (region, zone)}

    @staticmethod
    def resource_group():
        return {"id": RESOURCE_GROUP, "href": "https://resource-controller.cloud.ibm.com/v2/resource_groups/" + RESOURCE_GROUP,
                "name": "Default"}

    def new_record(self, kind, region, path, prefix="r006-", **fields):
        """A record with id, crn, href, created_at and resource_group, kept in ``store[kind]``."""
        quota = self.quotas.get(kind)
        if quota is not None and len(self.records(kind, region)) >= quota:
            raise ApiError(400, "over_quota", "The %s quota of %d in region %s is exceeded" % (kind, quota, region))
        rid = prefix + str(uuid.uuid4())
        rec = {"id": rid, "crn": self.crn(region, kind, rid), "href": "%s/%s/%s" % (self.service_url(region), path, rid),
               "created_at": now_text(), "resource_group": self.resource_group(), "_region": region, "_kind": kind}
        rec.update(fields)
        self.store.setdefault(kind, {})[rid] = rec
        return rec

    def records(self, kind, region):
        """The records of a kind in a region, lifecycles brought up to date, in creation order."""
        for rec in list(self.store.get(kind, {}).values()):
            self.settle(rec)
        return [r for r in self.store.get(kind, {}).values() if r["_region"] == region]

    def find(self, kind, region, rid, code=None):
        rec = self.store.get(kind, {}).get(rid)
        if rec is not None:
            self.settle(rec)
        if rec is None or rec["_region"] != region or rid not in self.store.get(kind, {}):
            raise ApiError(404, code or kind + "_not_found", "%s %s not found" % (kind.replace("_", " ").capitalize(), rid))
        return rec

    def take_failure(self, kind):
        """True when a test asked the next lifecycle of ``kind`` to end in ``failed``."""
        if self.failures.get(kind, 0) > 0:
            self.failures[kind] -= 1
            return True
        return False

    def later(self, rec, seconds, change):
        """After ``seconds``, apply ``change``: a dict of fields, or a callable ``change(rec)``."""
        rec.setdefault("_due", []).append((time.monotonic() + seconds, change))

    def settle(self, rec):
        due = rec.get("_due") or []
        now = time.monotonic()
        while due and due[0][0] <= now:
            change = due.pop(0)[1]
            if callable(change):
                change(rec)
            else:
                rec.update(change)

    def forget(self, rec):
        self.store.get(rec["_kind"], {}).pop(rec["id"], None)

    @staticmethod
    def etag(rec):
        return 'W/"%s-%d"' % (rec.get("id", rec.get("name", ""))[-12:], rec.get("_revision", 0))

    def check_if_match(self, rec, headers):
        wanted = headers.get("If-Match")
        if wanted and wanted != self.etag(rec):
            raise ApiError(412, "precondition_failed", "The If-Match value %s does not match the current ETag" % wanted)

    def getter(self, kind):
        """A GET handler for ``/<kind>s/{id}`` that sends the record and its ETag."""
        def get(region, params, query, body, headers):
            rec = self.find(kind, region, params["id"])
            return 200, rec, {"ETag": self.etag(rec)}
        return get

    def updater(self, kind, fields, check=None):
        """A PATCH handler: If-Match honoured, a new name must be free, ``check(rec, body)`` may refuse."""
        def update(region, params, query, body, headers):
            rec, body = self.find(kind, region, params["id"]), body or {}
            self.check_if_match(rec, headers)
            if check:
                check(rec, body)
            if body.get("name", rec["name"]) != rec["name"] and any(
                    r["name"] == body["name"] for r in self.records(kind, region)):
                raise ApiError(409, "validation_unique_failed", "The %s name %s is already in use" % (kind, body["name"]))
            rec.update({field: body[field] for field in fields if field in body})
            rec["_revision"] = rec.get("_revision", 0) + 1
            return 200, rec, {"ETag": self.etag(rec)}
        return update

    def page(self, region, kind, items, query, path=None, key="id"):
        """One page of ``items`` with ``limit``, ``first``, ``next`` (start token: the ``key`` of the first item
        of the next page) and ``total_count``."""
        try:
            limit = int(query.get("limit") or 50)
        except ValueError:
            raise ApiError(400, "validation_invalid_field_type", "limit must be an integer", target={"name": "limit", "type": "parameter"}) from None
        if limit < 1 or limit > 100:
            raise ApiError(400, "validation_min_value" if limit < 1 else "validation_max_value", "limit must be between 1 and 100",
                           target={"name": "limit", "type": "parameter"})
        start = 0
        if query.get("start"):
            ids = [item[key] for item in items]
            if query["start"] not in ids:
                raise ApiError(400, "bad_request", "start token %s is not valid" % query["start"], target={"name": "start", "type": "parameter"})
            start = ids.index(query["start"])
        base = "%s/%s" % (self.service_url(region), path or kind)
        kept = {k: v for k, v in query.items() if k not in ("start", "limit", "version", "generation")}
        suffix = "".join("&%s=%s" % (k, urllib.parse.quote(v, safe="")) for k, v in sorted(kept.items()))
        out = {kind: [public(item) for item in items[start:start + limit]], "limit": limit, "total_count": len(items),
               "first": {"href": "%s?limit=%d%s" % (base, limit, suffix)}}
        if start + limit < len(items):
            out["next"] = {"href": "%s?limit=%d&start=%s%s" % (base, limit, items[start + limit][key], suffix)}
        return out

    # -- test controls (also reachable over /_emulator/...) -----------------------------------------
    def inject(self, method, path_regex, status, count=1, retry_after=None, code=None):
        with self.lock:
            self.faults.append([method.upper(), re.compile(path_regex), status, count, retry_after, code])

    def fail_next(self, kind, count=1):
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + count

    def set_quota(self, kind, limit):
        with self.lock:
            self.quotas[kind] = limit

    def expire_tokens(self):
        """Every token issued so far is refused (401) from now on, as if it had expired."""
        with self.lock:
            self.valid_tokens.clear()

    # -- IAM -------------------------------------------------------------------------------------------
    def _token(self, form):
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"] or form.get("apikey") != [self.api_key]:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.",
                         "context": {"requestId": uuid.uuid4().hex}}
        now = int(time.time())
        jti = uuid.uuid4().hex
        token = jwt.encode({"iat": now, "exp": now + self.token_seconds, "iam_id": "iam-emulator", "sub": "emulator",
                            "jti": jti}, self.secret, algorithm="HS256")
        with self.lock:
            self.tokens_issued += 1
            self.valid_tokens.add(jti)
        return 200, {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer",
                     "expires_in": self.token_seconds, "expiration": now + self.token_seconds, "scope": "ibm openid"}

    def _check_token(self, header):
        if not header.startswith("Bearer "):
            raise ApiError(401, "not_authorized", "The request is not authorized: no bearer token")
        try:
            # One second of leeway: the SDK counts a token expired only once int(now) > exp, so it may send one
            # up to a second past exp (while it refreshes in the background).
            claims = jwt.decode(header[7:], self.secret, algorithms=["HS256"], leeway=TOKEN_LEEWAY)
            if claims.get("jti") not in self.valid_tokens:
                raise jwt.ExpiredSignatureError("revoked")
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "not_authorized", "The request is not authorized: the token has expired") from None
        except jwt.PyJWTError:
            raise ApiError(401, "not_authorized", "The request is not authorized: the token is not valid") from None

    # -- dispatch ---------------------------------------------------------------------------------------
    @staticmethod
    def _check_version(query):
        version = query.get("version")
        target = {"name": "version", "type": "parameter"}
        if not version:
            raise ApiError(400, "missing_version", "The `version` parameter is required and must be in the form of `YYYY-MM-DD`.",
                           target=target)
        try:
            valid = bool(VERSION_RE.match(version)) and bool(datetime.date.fromisoformat(version))
        except ValueError:
            valid = False
        if not valid:
            raise ApiError(400, "invalid_version", "The `version` is invalid, it must be in the form of `YYYY-MM-DD`.", target=target)
        if not OLDEST_VERSION <= version <= datetime.datetime.now(datetime.timezone.utc).date().isoformat():
            raise ApiError(400, "invalid_version_range",
                           "The `version` cannot be set at a future date nor before `%s`." % OLDEST_VERSION, target=target)
        if query.get("generation", "2") != "2":
            raise ApiError(400, "bad_request", "The 'generation' query parameter must be 2",
                           target={"name": "generation", "type": "parameter"})

    def dispatch(self, method, region, path, query, body, headers):
        if region not in self.regions:
            raise ApiError(404, "not_found", "Region %s not found" % region)
        self._check_version(query)
        known_path = False
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if not match:
                continue
            known_path = True
            if route_method == method:
                with self.lock:
                    return handler(region, match.groupdict(), query, body, headers)
        if known_path:
            raise ApiError(405, "method_not_allowed", "%s is not allowed on %s" % (method, path))
        raise ApiError(404, "not_found", "The requested resource %s %s was not found" % (method, path))

    def dispatch_control(self, method, path, query, raw):
        for route_method, pattern, handler in self.controls:
            match = pattern.match(path)
            if match and route_method == method:
                with self.lock:
                    return handler(match.groupdict(), query, raw)
        raise ApiError(404, "not_found", "No emulator control %s %s" % (method, path))

    def _fault(self, method, path):
        with self.lock:
            for fault in self.faults:
                if fault[3] > 0 and fault[0] in (method, "*") and fault[1].search(path):
                    fault[3] -= 1
                    headers = {"Retry-After": str(fault[4])} if fault[4] is not None else {}
                    code = fault[5] or {429: "rate_limit_exceeded", 503: "backend_service_unavailable", 502: "backend_service_unavailable",
                                        403: "forbidden", 401: "not_authorized", 409: "conflict"}.get(fault[2], "internal_server_error")
                    raise ApiError(fault[2], code, "injected fault", headers)

    def handle(self, method, raw_path, raw_body, headers):
        """One request: ``(status, payload or None, headers)``."""
        url = urllib.parse.urlsplit(raw_path)
        if url.path == "/identity/token" and method == "POST":
            status, payload = self._token(urllib.parse.parse_qs(raw_body.decode()))
            return status, payload, {}
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if url.path.startswith("/_emulator/"):
                return self._result(self.dispatch_control(method, url.path[len("/_emulator"):], query, raw_body))
            self._fault(method, url.path)
            self._check_token(headers.get("Authorization", ""))
            parts = url.path.split("/", 3)
            if len(parts) < 4 or parts[2] != "v1":
                raise ApiError(404, "not_found", "No such path %s" % url.path)
            try:
                body = json.loads(raw_body) if raw_body else None
            except ValueError:
                raise ApiError(400, "validation_failure", "The request body is not valid JSON") from None
            result = self._result(self.dispatch(method, parts[1], "/" + parts[3], query, body, headers))
            self.requests.append((method, url.path, result[0]))
            return result
        except ApiError as err:
            self.requests.append((method, url.path, err.status))
            error = {"code": err.code, "message": err.message, "more_info": MORE_INFO}
            if err.target:
                error["target"] = err.target
            trace = uuid.uuid4().hex
            return err.status, {"errors": [error], "trace": trace, "status_code": err.status}, dict(err.headers, **{"X-Request-Id": trace})

    @staticmethod
    def _result(result):
        status, payload = result[0], result[1]
        extra = result[2] if len(result) > 2 else {}
        return status, public(payload), extra

    def _handler(self):
        emu = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _do(self, method):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload, headers = emu.handle(method, self.path, raw, self.headers)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._do("GET")

            def do_POST(self):  # noqa: N802
                self._do("POST")

            def do_PUT(self):  # noqa: N802
                self._do("PUT")

            def do_DELETE(self):  # noqa: N802
                self._do("DELETE")

            def do_PATCH(self):  # noqa: N802
                self._do("PATCH")
        return Handler


def start(api_key, **kwargs):
    """Start the emulator in this process on a free 127.0.0.1 port; the object has .url, .iam_url, .stop()."""
    return VpcEmulator(api_key, **kwargs).start()


if __name__ == "__main__":
    from tests.emulators.vpc_control import main
    main()
