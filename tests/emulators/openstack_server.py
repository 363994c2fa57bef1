# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""An emulator of the Cinder (block storage v3) and Nova (compute v2.1) APIs, for the subset the openstack source uses,
behind the real Keystone of tests/peers/openstack.py.

From the API references (https://docs.openstack.org/api-ref/block-storage/v3/, .../compute/): version discovery at the
service root and the version root; microversions negotiated with ``OpenStack-API-Version`` (Cinder 3.0-3.71, Nova
2.1-2.96; outside the range 406, as the services answer); tokens validated by the real Keystone
(``GET /v3/auth/tokens``), so a wrong or expired token is a real 401; errors in the services' fault format
(``{"badRequest": {"message", "code"}}``, ``itemNotFound``, ``conflictingRequest``...). Slow states are real: a volume is
``creating`` then ``available``, an attachment ``attaching`` then ``in-use``, a revert ``reverting``; each lasts ``delay``.

Volumes are sparse files under ``data_dir``. Attaching a volume to a server the emulator calls a *conversion host*
(``seed_server(..., conversion_host=True)``) attaches it for real: a loop device on its file and the link
``virtio-<first 20 characters of the volume id>`` under ``by_id_dir``, as libvirt/KVM name a Cinder volume by its
serial. ``start(auth_url, ...)`` serves on a free 127.0.0.1 port in a thread; ``register(conn)`` adds the two
services to the Keystone catalog of every region; ``stop()`` detaches and removes everything.
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid

from tests.emulators import openstack_block, openstack_compute

SERVICES = {"volume": ("cinderv3", "block-storage", "v3", "3.0", "3.71", "volume"),
            "compute": ("nova", "compute", "v2.1", "2.1", "2.96", "compute")}
FAULTS = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 406: "notAcceptable", 409: "conflictingRequest",
          413: "overLimit"}
TOKEN_TTL = 60.0


class Fault(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code

    def body(self):
        return {FAULTS.get(self.code, "computeFault"): {"message": str(self), "code": self.code}}


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def touch(record, **changes):
    """Change a volume or snapshot as the services do: every change of state moves ``updated_at``."""
    record.update(changes, updated_at=now())


def _version(value):
    major, minor = value.split(".")
    return int(major), int(minor)


class Cloud:
    """The state of both services, one lock; timed state changes run when a request (or ``settle()``) finds them due."""

    def __init__(self, data_dir, by_id_dir, delay, glance_url=None):
        self.data_dir, self.by_id_dir, self.delay, self.glance_url = data_dir, by_id_dir, delay, glance_url
        self.jobs = []  # threads that talk to Glance (createImage uploads, volumes from images)
        self.request_token = None  # the token of the request being served: Nova and Cinder call Glance with it
        self.lock = threading.RLock()
        self.volumes, self.snapshots, self.servers = {}, {}, {}
        self.timers = []  # (due, sequence, function)
        self.sequence = 0
        self.calls = []  # (method, path) of every request, for tests
        self.faults = []  # [method, path regex, code, message, count]: the next matching requests fail so
        self.block = openstack_block.Block(self)
        self.compute = openstack_compute.Compute(self)

    def later(self, function, delay=None):
        self.sequence += 1
        self.timers.append((time.monotonic() + (self.delay if delay is None else delay), self.sequence, function))

    def settle(self, wait=False):
        """Run the state changes that are due (all of them with ``wait``, after the Glance jobs end: never call that holding
        the lock, the jobs take it to finish)."""
        if wait:
            while self.jobs:
                self.jobs.pop().join(120)
        with self.lock:
            while self.timers:
                self.timers.sort()
                due, _unused, function = self.timers[0]
                if due > time.monotonic() and not wait:
                    return
                self.timers.pop(0)
                function()

    @staticmethod
    def new_id():
        return str(uuid.uuid4())


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    emulator = None

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def _serve(self):
        emu, length = self.emulator, int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, body, headers = emu.handle(self.command, self.path, self.headers, raw)
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class Emulator:
    def __init__(self, auth_url, data_dir, by_id_dir, delay=0.05, glance_url=None):
        self.auth_url = auth_url
        self.cloud = Cloud(data_dir, by_id_dir, delay, glance_url)
        self.tokens = {}  # token -> (project id, expiry of the cache entry)
        handler = type("Handler", (_Handler,), {"emulator": self})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="openstack-emulator", daemon=True)

    def endpoint(self, service):
        return "%s/%s/%s" % (self.url, service, SERVICES[service][2])

    def register(self, conn, regions):
        """Add the block-storage and compute services to the Keystone catalog (public endpoints in every region)."""
        for service, (name, kind, *_unused) in SERVICES.items():
            made = conn.identity.create_service(name=name, type=kind)
            for region in regions:
                conn.identity.create_endpoint(service_id=made.id, interface="public", url=self.endpoint(service), region_id=region)

    # --- requests ---------------------------------------------------------------------------------------------------------------
    def handle(self, method, path, headers, raw):
        parsed = path.split("?", 1)
        route, query = parsed[0].rstrip("/"), (parsed[1] if len(parsed) > 1 else "")
        match = re.match(r"^/(volume|compute)(?:/(v3|v2\.1))?(/.*)?$", route)
        if not match:
            return 404, {"itemNotFound": {"message": "The resource could not be found.", "code": 404}}, {}
        service, version, rest = match.group(1), match.group(2), match.group(3) or ""
        if version is None or not rest:
            return 200 if version else 300, self._versions(service, single=version is not None), {}
        try:
            project = self._authenticate(headers.get("X-Auth-Token"))
            micro = self._microversion(service, headers)
            body = json.loads(raw) if raw else None
            with self.cloud.lock:
                self.cloud.calls.append((method, "/%s%s" % (service, rest)))
                self._injected(method, "/%s%s" % (service, rest))
                self.cloud.settle()
                self.cloud.request_token = headers.get("X-Auth-Token")
                api = self.cloud.block if service == "volume" else self.cloud.compute
                status, answer = api.route(method, rest, query, body, micro, project)
        except Fault as exc:
            return exc.code, exc.body(), {}
        except (ValueError, KeyError, TypeError) as exc:
            return 400, Fault(400, "Invalid input for the request: %s" % exc).body(), {}
        except Exception as exc:  # pylint: disable=broad-except
            # answered as the services answer an internal error
            return 500, {"computeFault": {"message": "The server has either erred or is incapable of performing the requested operation. "
                                                     "(%s: %s)" % (type(exc).__name__, exc), "code": 500}}, {}
        label = SERVICES[service][5]
        return status, answer, {"OpenStack-API-Version": "%s %d.%d" % (label, micro[0], micro[1]), "Vary": "OpenStack-API-Version"}

    def inject(self, method, pattern, code, message, count=1):
        """The next ``count`` requests ``method`` on a path matching ``pattern`` fail with ``code`` and ``message``."""
        with self.cloud.lock:
            self.cloud.faults.append([method, pattern, code, message, count])

    def _injected(self, method, path):
        for fault in self.cloud.faults:
            if fault[4] > 0 and fault[0] == method and re.search(fault[1], path):
                fault[4] -= 1
                raise Fault(fault[2], fault[3])

    def faults_left(self):
        return sum(f[4] for f in self.cloud.faults)

    def _versions(self, service, single):
        _name, _kind, version, low, high, _label = SERVICES[service]
        doc = {"id": version if service == "compute" else "v3.0", "status": "CURRENT", "version": high, "min_version": low,
               "updated": "2024-01-01T00:00:00Z", "links": [{"rel": "self", "href": "%s/" % self.endpoint(service)}],
               "media-types": [{"base": "application/json", "type": "application/vnd.openstack.%s+json;version=%s" % (service, version[1:])}]}
        return {"version": doc} if single else {"versions": [doc]}

    def _microversion(self, service, headers):
        label, low, high = SERVICES[service][5], SERVICES[service][3], SERVICES[service][4]
        asked = None
        for value in headers.get_all("OpenStack-API-Version") or []:
            for part in value.split(","):
                words = part.split()
                if len(words) == 2 and words[0] == label:
                    asked = words[1]
        if asked is None and service == "compute":
            asked = headers.get("X-OpenStack-Nova-API-Version")
        if asked is None:
            return _version(low)
        if asked == "latest":
            return _version(high)
        try:
            wanted = _version(asked)
        except ValueError:
            raise Fault(400, "API Version String %s is of invalid format. Must be of format MajorNum.MinorNum." % asked) from None
        if not _version(low) <= wanted <= _version(high):
            raise Fault(406, "Version %s is not supported by the API. Minimum is %s and maximum is %s." % (asked, low, high))
        return wanted

    def _authenticate(self, token):
        if not token:
            raise Fault(401, "The request you have made requires authentication.")
        cached = self.tokens.get(token)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        request = urllib.request.Request(re.sub(r"(/v3)?/*$", "", self.auth_url) + "/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - the test Keystone on loopback
                project = json.load(answer)["token"].get("project", {}).get("id")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 404):
                raise Fault(401, "The request you have made requires authentication.") from None
            raise
        self.tokens[token] = (project, time.monotonic() + TOKEN_TTL)
        return project

    # --- lifecycle and test helpers ---------------------------------------------------------------------------------------------
    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.cloud.settle(wait=True)
        with self.cloud.lock:
            self.cloud.compute.detach_all()

    def reset(self):
        """Forget every server, volume and snapshot (their files and attachments too): a test starts from an empty cloud."""
        self.cloud.settle(wait=True)
        with self.cloud.lock:
            self.cloud.compute.detach_all()
            self.cloud.servers.clear()
            self.cloud.volumes.clear()
            self.cloud.snapshots.clear()
            self.cloud.calls.clear()
            self.cloud.faults.clear()
            for name in os.listdir(self.cloud.data_dir):
                os.unlink(os.path.join(self.cloud.data_dir, name))

    def release_volume(self, volume_id):
        """The volume detached from its server out of band (the server deleted, its volume kept): ``available``."""
        self.cloud.settle(wait=True)
        with self.cloud.lock:
            for server in self.cloud.servers.values():
                for att in [a for a in server["attached"] if a["volume_id"] == volume_id]:
                    server["attached"].remove(att)
            self.cloud.compute.unexpose(volume_id)
            touch(self.cloud.volumes[volume_id], status="available", attachments=[])

    def seed_server(self, name, data=b"", size_gb=1, conversion_host=False, zone="nova", image_id=None, ceph=None, image_properties=None):
        """An ACTIVE server whose root disk holds ``data``: volume-backed (its boot volume), or with ``image_id``
        image-backed (a local disk file, ``disk`` in the record). With ``ceph`` (tests/peers/ceph.py) the boot volume is
        also the RBD image ``volumes/volume-<id>`` holding the same bytes, as Cinder's RBD driver names it (the emulator's
        shortcut: its own operations keep using the file). ``image_properties``: the ``volume_image_metadata`` Cinder keeps
        on a volume made from an image. The server's record."""
        with self.cloud.lock:
            server = self.cloud.compute.seed(name, data, size_gb, conversion_host, zone, image_id)
            if image_properties and not image_id:  # the boot volume was made from an image with these properties
                self.cloud.volumes[server["boot_volume"]]["volume_image_metadata"] = dict(image_properties)
        if ceph is not None and not image_id:
            ceph.run("rbd", "import", "--no-progress", self.volume_path(server["boot_volume"]), "volumes/volume-%s" % server["boot_volume"])
        return server

    def volume_path(self, volume_id):
        return self.cloud.block.path(volume_id)

    def leftovers(self):
        """Loop devices and by-id links still attached (none may be left after stop)."""
        return self.cloud.compute.exposed()


def start(auth_url, data_dir, by_id_dir, delay=0.05, glance_url=None):
    return Emulator(auth_url, data_dir, by_id_dir, delay, glance_url).start()
