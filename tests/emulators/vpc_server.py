# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A small IBM Cloud VPC API emulator that the real ``ibm-vpc`` SDK talks to over HTTP.

Paths are ``/<region>/v1/...`` (give the SDK ``service_url=<url>/<region>/v1``); the IAM token
endpoint is ``/identity/token`` on the same port and issues JWT access tokens (the SDK's
IAMAuthenticator reads ``exp``/``iat`` from them) that expire after ``token_seconds``.
Errors have the VPC shape ``{"errors": [{"code", "message", "more_info"}], "trace", "status_code"}``.
Covered so far: version/generation validation, pagination, volumes (seeded), snapshots
(create from source_volume, pending -> stable after ``delay`` seconds, list filters, delete),
fault injection (``inject(method, path_regex, status, count, retry_after)``).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import re
import threading
import time
import urllib.parse
import uuid

import jwt

from tests.peers.ports import free_port

ACCOUNT = "aa2432b1fa4d4ace891e9b80fc104e34"
VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ApiError(Exception):
    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class VpcEmulator:
    def __init__(self, api_key, regions=("us-south", "eu-de"), token_seconds=3600, delay=0.2, data_dir=None, by_id_dir=None):
        self.data_dir, self.by_id_dir = data_dir, by_id_dir  # volume files; virtio-<serial> links of attachments
        self.attachments = {}  # attachment id -> (region, instance id, record, loop device or None)
        self.api_key, self.regions, self.token_seconds, self.delay = api_key, list(regions), token_seconds, delay
        self.lock = threading.RLock()
        self.volumes, self.snapshots = {}, {}  # id -> (region, record, ready_at)
        self.faults = []  # [method, regex, status, remaining, retry_after]
        self.tokens_issued = 0
        self.secret = uuid.uuid4().hex
        self._server = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    @property
    def iam_url(self):
        return self.url

    def service_url(self, region):
        return "%s/%s/v1" % (self.url, region)

    def start(self):
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        for aid in list(self.attachments):
            self._unexpose(aid)
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- control API -------------------------------------------------------------
    def inject(self, method, path_regex, status, count=1, retry_after=None):
        with self.lock:
            self.faults.append([method.upper(), re.compile(path_regex), status, count, retry_after])

    def seed_volume(self, region, name, capacity=10, zone=None):
        vid = "r006-" + str(uuid.uuid4())
        zone = zone or region + "-1"
        rec = {"id": vid, "name": name, "crn": self._crn(region, "volume", vid), "href": "", "capacity": capacity,
               "created_at": _now(), "encryption": "provider_managed", "iops": 3000, "status": "available",
               "status_reasons": [], "profile": {"name": "general-purpose", "href": self.service_url(region) + "/volume/profiles/general-purpose"},
               "zone": {"name": zone, "href": self.service_url(region) + "/regions/%s/zones/%s" % (region, zone)},
               "resource_group": self._rg(region), "user_tags": [], "active": False, "attachment_state": "unattached",
               "bandwidth": 393, "busy": False, "health_reasons": [], "health_state": "ok", "resource_type": "volume",
               "volume_attachments": [], "adjustable_capacity_states": [], "adjustable_iops_states": [],
               "software_attachments": [], "storage_generation": 1}
        rec["href"] = self.service_url(region) + "/volumes/" + vid
        with self.lock:
            self.volumes[vid] = (region, rec, 0)
        return rec

    def _file(self, rid):
        return os.path.join(self.data_dir, rid + ".img")

    def write_volume(self, vid, data):
        """Give a seeded volume bytes (a real file in data_dir, sized to its capacity in MiB for the tests)."""
        with open(self._file(vid), "wb") as handle:
            handle.write(data)
            handle.truncate(max(len(data), 1 << 20))

    def attach(self, region, instance_id, volume_id, name=None):
        """Attach a volume to an instance: a loop device on its file and a virtio-<serial> link under by_id_dir.

        The virtio serial a VPC guest sees is the first 20 characters of the volume attachment id
        (IBM Cloud docs, "Attaching block storage volumes": /dev/disk/by-id/virtio-<first 20 chars of the attachment id>).
        """
        aid = "0717-" + str(uuid.uuid4())
        vol = self.volumes[volume_id][1]
        href = self.service_url(region) + "/instances/%s/volume_attachments/%s" % (instance_id, aid)
        rec = {"id": aid, "name": name or "attachment-" + aid[-8:], "href": href, "bandwidth": 393, "created_at": _now(),
               "delete_volume_on_instance_delete": False, "status": "attaching", "type": "data",
               "device": {"id": aid[:20]},
               "volume": {"id": vol["id"], "crn": vol["crn"], "href": vol["href"], "name": vol["name"], "resource_type": "volume"}}
        loop = None
        if self.by_id_dir and self.data_dir and os.path.exists(self._file(volume_id)):
            loop = subprocess.run(["losetup", "--find", "--show", self._file(volume_id)], check=True,
                                  capture_output=True, text=True).stdout.strip()
            os.symlink(loop, os.path.join(self.by_id_dir, "virtio-" + aid[:20]))
        rec["status"] = "attached"
        vol["attachment_state"], vol["active"] = "attached", True
        self.attachments[aid] = (region, instance_id, rec, loop)
        return rec

    def _unexpose(self, aid):
        region, instance_id, rec, loop = self.attachments.pop(aid)
        if loop:
            link = os.path.join(self.by_id_dir, "virtio-" + aid[:20])
            if os.path.lexists(link):
                os.unlink(link)
            subprocess.run(["losetup", "-d", loop], check=False)
        vol = self.volumes.get(rec["volume"]["id"])
        if vol:
            vol[1]["attachment_state"], vol[1]["active"] = "unattached", False

    def detach(self, aid):
        with self.lock:
            self._unexpose(aid)

    # -- helpers -------------------------------------------------------------------
    def _crn(self, region, kind, rid):
        return "crn:v1:bluemix:public:is:%s:a/%s::%s:%s" % (region, ACCOUNT, kind, rid)

    def _rg(self, region):
        rg = "fee82deba12e4c0fb69c3b09d1f12345"
        return {"id": rg, "href": "https://resource-controller.cloud.ibm.com/v2/resource_groups/" + rg, "name": "Default"}

    def _snapshot_view(self, rec, ready_at):
        if rec["lifecycle_state"] == "pending" and time.monotonic() >= ready_at:
            rec["lifecycle_state"] = "stable"
            rec["progress"] = 100
            rec["captured_at"] = _now()
        return rec

    def _page(self, region, kind, items, query):
        limit = int(query.get("limit", ["50"])[0])
        if limit < 1 or limit > 100:
            raise ApiError(400, "bad_request", "limit must be between 1 and 100")
        start = int(query.get("start", ["0"])[0] or 0)
        base = "%s/%s" % (self.service_url(region), kind)
        out = {kind: items[start:start + limit], "limit": limit, "total_count": len(items),
               "first": {"href": "%s?limit=%d" % (base, limit)}}
        if start + limit < len(items):
            out["next"] = {"href": "%s?limit=%d&start=%d" % (base, limit, start + limit)}
        return out

    # -- IAM -----------------------------------------------------------------------------
    def _token(self, form):
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"] or form.get("apikey") != [self.api_key]:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.",
                         "context": {"requestId": uuid.uuid4().hex}}
        now = int(time.time())
        token = jwt.encode({"iat": now, "exp": now + self.token_seconds, "iam_id": "iam-emulator", "sub": "emulator"},
                           self.secret, algorithm="HS256")
        with self.lock:
            self.tokens_issued += 1
        return 200, {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer",
                     "expires_in": self.token_seconds, "expiration": now + self.token_seconds, "scope": "ibm openid"}

    def _authorised(self, header):
        if not header.startswith("Bearer "):
            return False
        try:
            jwt.decode(header[7:], self.secret, algorithms=["HS256"])
            return True
        except jwt.PyJWTError:
            return False

    # -- VPC routes ------------------------------------------------------------------------
    def route(self, method, region, path, query, body):
        if region not in self.regions:
            raise ApiError(404, "not_found", "region %s not found" % region)
        version = query.get("version", [None])[0]
        if not version:
            raise ApiError(400, "missing_version", "The version parameter is required")
        if not VERSION_RE.match(version):
            raise ApiError(400, "bad_version", "The version parameter is not a valid date")
        if query.get("generation", ["2"])[0] != "2":
            raise ApiError(400, "bad_generation", "The generation parameter must be 2")
        parts = path.strip("/").split("/")
        with self.lock:
            if parts == ["snapshots"] and method == "GET":
                items = [self._snapshot_view(r, t) for (g, r, t) in self.snapshots.values() if g == region]
                for key, field in (("name", "name"),):
                    if key in query:
                        items = [i for i in items if i[field] == query[key][0]]
                if "source_volume.id" in query:
                    items = [i for i in items if i["source_volume"]["id"] == query["source_volume.id"][0]]
                if "tag" in query:
                    items = [i for i in items if query["tag"][0] in i["user_tags"]]
                return 200, self._page(region, "snapshots", items, query)
            if parts == ["snapshots"] and method == "POST":
                return 201, self._create_snapshot(region, body or {})
            if len(parts) == 2 and parts[0] == "snapshots":
                found = self.snapshots.get(parts[1])
                if not found or found[0] != region:
                    raise ApiError(404, "snapshot_not_found", "Snapshot not found")
                if method == "GET":
                    return 200, self._snapshot_view(found[1], found[2])
                if method == "DELETE":
                    del self.snapshots[parts[1]]
                    return 204, None
            if len(parts) >= 3 and parts[0] == "instances" and parts[2] == "volume_attachments":
                return self._attachment_route(method, region, parts, body or {})
            if parts == ["volumes"] and method == "GET":
                return 200, self._page(region, "volumes", [r for (g, r, t) in self.volumes.values() if g == region], query)
            if len(parts) == 2 and parts[0] == "volumes" and method == "GET":
                found = self.volumes.get(parts[1])
                if not found or found[0] != region:
                    raise ApiError(404, "volume_not_found", "Volume not found")
                return 200, found[1]
        raise ApiError(404, "not_found", "The requested resource %s %s was not found" % (method, path))

    def _attachment_route(self, method, region, parts, body):
        instance_id = parts[1]
        if method == "POST" and len(parts) == 3:
            volume = body.get("volume") or {}
            if "id" in volume:
                if volume["id"] not in self.volumes:
                    raise ApiError(404, "volume_not_found", "Volume %s not found" % volume["id"])
                if self.volumes[volume["id"]][1]["attachment_state"] == "attached":
                    raise ApiError(409, "volume_in_use", "Volume %s is attached already" % volume["id"])
                vid = volume["id"]
            else:
                snap = self.snapshots.get((volume.get("source_snapshot") or {}).get("id"))
                if not snap or snap[0] != region:
                    raise ApiError(404, "snapshot_not_found", "Source snapshot not found")
                vid = self.seed_volume(region, volume.get("name") or "volume-" + uuid.uuid4().hex[:8],
                                       volume.get("capacity") or snap[1]["minimum_capacity"])["id"]
                if self.data_dir and os.path.exists(self._file(snap[1]["id"])):
                    shutil.copyfile(self._file(snap[1]["id"]), self._file(vid))
            rec = self.attach(region, instance_id, vid, body.get("name"))
            rec["delete_volume_on_instance_delete"] = bool(body.get("delete_volume_on_instance_delete"))
            return 201, rec
        found = self.attachments.get(parts[3]) if len(parts) == 4 else None
        if method == "GET" and len(parts) == 3:
            return 200, {"volume_attachments": [a[2] for a in self.attachments.values() if a[1] == instance_id]}
        if not found or found[1] != instance_id:
            raise ApiError(404, "volume_attachment_not_found", "Volume attachment not found")
        if method == "GET":
            return 200, found[2]
        if method == "DELETE":
            self._unexpose(parts[3])
            return 202, None
        raise ApiError(405, "method_not_allowed", "Method not allowed")

    def _create_snapshot(self, region, body):
        source = (body.get("source_volume") or {}).get("id")
        vol = self.volumes.get(source)
        if not vol or vol[0] != region:
            raise ApiError(404, "volume_not_found", "Source volume %s not found" % source)
        name = body.get("name") or "snapshot-" + uuid.uuid4().hex[:8]
        if any(r["name"] == name for (g, r, t) in self.snapshots.values() if g == region):
            raise ApiError(409, "snapshot_name_duplicate", "The snapshot name %s is already in use" % name)
        sid = "r006-" + str(uuid.uuid4())
        v = vol[1]
        rec = {"id": sid, "name": name, "crn": self._crn(region, "snapshot", sid),
               "href": self.service_url(region) + "/snapshots/" + sid, "bootable": False, "created_at": _now(),
               "deletable": True, "encryption": "provider_managed", "lifecycle_state": "pending",
               "minimum_capacity": v["capacity"], "size": 1, "resource_type": "snapshot",
               "resource_group": self._rg(region), "user_tags": list(body.get("user_tags") or []),
               "service_tags": [], "clones": [], "copies": [], "backup_policy_plan": None,
               "source_volume": {"id": v["id"], "crn": v["crn"], "href": v["href"], "name": v["name"], "resource_type": "volume"},
               "snapshot_consistency_group": None, "progress": 0, "software_attachments": [],
               "storage_generation": 1}
        rec = {k: val for k, val in rec.items() if val is not None}
        if self.data_dir and os.path.exists(self._file(v["id"])):
            shutil.copyfile(self._file(v["id"]), self._file(sid))
        self.snapshots[sid] = (region, rec, time.monotonic() + self.delay)
        return rec

    def _fault(self, method, path):
        with self.lock:
            for fault in self.faults:
                if fault[3] > 0 and fault[0] in (method, "*") and fault[1].search(path):
                    fault[3] -= 1
                    headers = {"Retry-After": str(fault[4])} if fault[4] is not None else {}
                    code = {429: "too_many_requests", 503: "service_unavailable"}.get(fault[2], "internal_error")
                    raise ApiError(fault[2], code, "injected fault", headers)

    def _handler(self):
        emu = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, payload, headers=None):
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _do(self, method):
                url = urllib.parse.urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if url.path == "/identity/token" and method == "POST":
                    return self._send(*emu._token(urllib.parse.parse_qs(raw.decode())))
                trace = uuid.uuid4().hex
                try:
                    emu._fault(method, url.path)
                    if not emu._authorised(self.headers.get("Authorization", "")):
                        raise ApiError(401, "not_authorized", "The request is not authorized")
                    parts = url.path.split("/", 3)
                    if len(parts) < 4 or parts[2] != "v1":
                        raise ApiError(404, "not_found", "No such path")
                    status, payload = emu.route(method, parts[1], "/" + parts[3], urllib.parse.parse_qs(url.query),
                                                json.loads(raw) if raw else None)
                    self._send(status, payload)
                except ApiError as err:
                    self._send(err.status, {"errors": [{"code": err.code, "message": err.message,
                                                        "more_info": "https://cloud.ibm.com/docs/vpc?topic=vpc-rias-error-messages"}],
                                            "trace": trace, "status_code": err.status}, err.headers)

            def do_GET(self):  # noqa: N802
                self._do("GET")

            def do_POST(self):  # noqa: N802
                self._do("POST")

            def do_DELETE(self):  # noqa: N802
                self._do("DELETE")

            def do_PATCH(self):  # noqa: N802
                self._do("PATCH")
        return Handler


def start(api_key, **kwargs):
    """Start the emulator on a free 127.0.0.1 port; the returned object has .url, .iam_url, .stop()."""
    return VpcEmulator(api_key, **kwargs).start()
