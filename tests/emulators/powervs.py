# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""An IBM Power Virtual Server (PowerVS) API emulator for the tests, on a free 127.0.0.1 port.

It follows IBM's public Power Cloud API reference (https://cloud.ibm.com/apidocs/power-cloud) for the parts the
collection uses; ``powervs_reference.py`` holds the reference's models and every answer is checked against them
(tests/integration/test_powervs_reference.py):

- IAM: ``POST /identity/token`` (``grant_type=urn:ibm:params:oauth:grant-type:apikey``) answers a JWT
  access token with ``expires_in`` / ``expiration``; every API call needs ``Authorization: Bearer`` with a
  token that has not expired (else 401) and the ``CRN`` header of the workspace (else 403).
- ``GET /pcloud/v1/cloud-instances/{id}``: the workspace (404 when there is none).
- ``GET /pcloud/v1/cloud-instances/{id}/storage-capacity/types``: the storage types it offers.
- ``POST /pcloud/v1/cloud-instances/{id}/cos-images`` (CreateCosImageImportJob: required ``imageName``,
  ``bucketName`` (``bucket[/folder]``), ``imageFilename``, ``region``; ``bucketAccess`` public|private (default
  private, which needs ``accessKey``/``secretKey``), ``osType`` aix|ibmi|rhel|sles, ``storageType`` (default tier3),
  ``storagePool`` (then type and affinity are ignored), ``storageAffinity``) answers 202 JobReference ``{id, href}``;
  one import at a time per workspace (409 otherwise).
- ``GET /pcloud/v1/cloud-instances/{id}/jobs/{job_id}``: Job ``{id, operation: {id, target: image, action:
  imageImport}, status: {state, progress, message}, createTimestamp}``; state goes queued -> running ->
  completed (or failed). ``GET .../jobs`` lists the last 5 (filters ``operation.id``, ``operation.target``,
  ``operation.action``); ``DELETE .../jobs/{job_id}``; ``GET .../cos-images`` is the last import job.
- ``GET /pcloud/v1/cloud-instances/{id}/images`` (ImageReferences ``{images: [...]}``), ``GET`` / ``DELETE
  .../images/{image_id}`` (Image).

Errors have IBM's shape ``{code, description, error, message}`` (400, 401, 403, 404, 405, 409, 429, 500, 503).
The import reads the object from the S3 server of its region (``cos_endpoints``) with the request's HMAC keys and
checks it is an OVA (a tar with an OVF descriptor whose disk qemu-img reads); anything else fails the job, as in
the cloud. Test knobs: ``fail(method, path_regex, status, times)`` makes the next matching calls answer an error
(429 with Retry-After, 5xx, ...); ``fail_import`` makes the next import job fail; ``fail_job`` fails one that
runs; ``hold_jobs`` keeps jobs running until released. A subprocess offers the same knobs under ``/_emulator/``
(powervs_control.py; tests/emulators/README.md).
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import secrets
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import jwt

from tests.emulators.powervs_reference import problems
from tests.peers.ports import free_port

OS_TYPES = ("aix", "ibmi", "rhel", "sles")
JOB_DONE = ("completed", "failed")
DEFAULT_STORAGE_TYPE = "tier3"  # the reference: no storageType, no pool, no affinity -> tier3
JOBS_LISTED = 5  # the reference: GET .../jobs lists up to the last 5 jobs


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


ERROR_NAMES = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found", 405: "method not allowed",
               409: "conflict", 422: "unprocessable entity", 429: "too many requests", 500: "internal server error",
               502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}


def _error(code, description, error=None):
    return code, {"code": code, "description": description, "error": error or ERROR_NAMES.get(code, "error"), "message": description}


def pool_name(storage_type):
    return "%s-pool-1" % storage_type.capitalize()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Workspace:
    def __init__(self, ws_id, crn, region, storage_types):
        self.id, self.crn, self.region, self.storage_types = ws_id, crn, region, list(storage_types)
        self.images, self.jobs = {}, {}

    def pools(self):
        return {pool_name(t): t for t in self.storage_types}


class PowerVSEmulator:
    """Context manager; ``url`` is the API base, ``iam_url`` the IAM base (the SDK appends /identity/token)."""

    def __init__(self, api_key, cos_endpoints, token_seconds=3600, queued_seconds=0.3, running_seconds=1.0, progress_steps=4):
        self.api_key = api_key
        self.cos_endpoints = dict(cos_endpoints)  # COS region -> S3 endpoint URL
        self.token_seconds = token_seconds
        self.queued_seconds, self.running_seconds, self.progress_steps = queued_seconds, running_seconds, progress_steps
        self.workspaces = {}
        self.lock = threading.Lock()
        self.secret = secrets.token_bytes(32)
        self.issued = 0
        self.requests = []  # (method, path, status)
        self.import_bodies = []
        self._faults = []  # [method, regex, status, times, retry_after]
        self.fail_import = None  # a message: the next import job fails with it
        self.hold_jobs = threading.Event()  # set: running jobs stay running (at their progress) until cleared
        self._server = None
        self._threads = []
        self._stopping = threading.Event()

    # --- set-up -----------------------------------------------------------------------------------------------
    def add_workspace(self, region="us-south", storage_types=("tier0", "tier1", "tier3")):
        ws_id = str(uuid.uuid4())
        crn = "crn:v1:bluemix:public:power-iaas:%s:a/%s:%s::" % (region, uuid.uuid4().hex, ws_id)
        self.workspaces[ws_id] = Workspace(ws_id, crn, region, storage_types)
        return self.workspaces[ws_id]

    def fail(self, method, path_regex, status, times=1, retry_after=None):
        self._faults.append([method.upper(), re.compile(path_regex), status, times, retry_after])

    def fail_job(self, ws_id, job_id, message):
        """A job that is queued or running fails with ``message`` (as when the service gives up on it)."""
        job = self.workspaces[ws_id].jobs[job_id]
        job["_fail"] = message
        return job

    def expire_tokens(self):
        """Every token issued so far stops working at once (as when it outlives its hour)."""
        self.secret = secrets.token_bytes(32)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    iam_url = url

    def __enter__(self):
        self._server = _Server(("127.0.0.1", free_port()), _handler_class(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stopping.set()
        self.hold_jobs.clear()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(10)

    # --- IAM --------------------------------------------------------------------------------------------------
    def _token(self, form):
        if form.get("grant_type") != ["urn:ibm:params:oauth:grant-type:apikey"] or form.get("apikey") != [self.api_key]:
            return 400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.", "context": {}}
        now = int(time.time())
        token = jwt.encode({"iat": now, "exp": now + self.token_seconds, "sub": "emulator", "jti": uuid.uuid4().hex}, self.secret, algorithm="HS256")
        with self.lock:
            self.issued += 1
        return 200, {"access_token": token, "refresh_token": "not_supported", "token_type": "Bearer", "expires_in": self.token_seconds,
                     "expiration": now + self.token_seconds, "scope": "ibm openid"}

    def _authorized(self, headers):
        value = headers.get("Authorization", "")
        if not value.startswith("Bearer "):
            return False
        try:
            jwt.decode(value[7:], self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return False
        return True

    # --- API --------------------------------------------------------------------------------------------------
    def _fault(self, method, path):
        with self.lock:
            for fault in self._faults:
                if fault[0] == method and fault[1].search(path) and fault[3] > 0:
                    fault[3] -= 1
                    return fault
        return None

    def handle(self, method, path, headers, body, query=None):
        if path.startswith("/_emulator/"):
            from tests.emulators.powervs_control import control  # pylint: disable=import-outside-toplevel

            return control(self, method, path, body) + (None,)
        fault = self._fault(method, path)
        if fault:
            status = fault[2]
            return status, _error(status, "injected failure")[1], fault[4]
        if not self._authorized(headers):
            return _error(401, "the access token is missing, invalid or expired") + (None,)
        match = re.match(r"^/pcloud/v1/cloud-instances/([^/]+)(/.*)?$", path)
        if not match:
            return _error(404, "no such route %s" % path) + (None,)
        ws = self.workspaces.get(match.group(1))
        if ws is None:
            return _error(404, "cloud instance %s not found" % match.group(1)) + (None,)
        if headers.get("CRN") != ws.crn:
            return _error(403, "the CRN header does not name cloud instance %s" % ws.id) + (None,)
        return self._route(ws, method, match.group(2) or "", body, query or {}) + (None,)

    def _route(self, ws, method, rest, body, query):  # pylint: disable=too-many-return-statements
        if rest == "":
            if method != "GET":
                return _error(405, "%s is not supported on a cloud instance" % method)
            return 200, {"cloudInstanceID": ws.id, "enabled": True, "initialized": True, "region": ws.region, "tenantID": "tenant",
                         "capabilities": ["power-edge-router"], "limits": {}, "usage": {}, "pvmInstances": []}
        if method == "GET" and rest == "/storage-capacity/types":
            return 200, {"maximumStorageAllocation": {"maxAllocationSize": 10000, "storagePool": pool_name(ws.storage_types[0]),
                                                      "storageType": ws.storage_types[0]},
                         "storageTypesCapacity": [{"storageType": t, "maximumStorageAllocation": {"maxAllocationSize": 10000, "storageType": t,
                                                                                                  "storagePool": pool_name(t)},
                                                   "storagePoolsCapacity": [{"poolName": pool_name(t), "storageType": t}]}
                                                  for t in ws.storage_types]}
        if rest == "/cos-images":
            if method == "POST":
                return self._start_import(ws, body)
            if method == "GET":  # the last image import job
                imports = [j for j in ws.jobs.values() if j["operation"]["action"] == "imageImport"]
                return (200, self._job_view(imports[-1])) if imports else _error(404, "no image import job in cloud instance %s" % ws.id)
            return _error(405, "%s is not supported on cos-images" % method)
        if rest == "/jobs":
            if method != "GET":
                return _error(405, "%s is not supported on jobs" % method)
            jobs = [j for j in ws.jobs.values()
                    if all(not query.get("operation." + k) or query["operation." + k] == j["operation"][k] for k in ("id", "target", "action"))]
            return 200, {"jobs": [self._job_view(j) for j in jobs[-JOBS_LISTED:]]}
        match = re.match(r"^/jobs/([^/]+)$", rest)
        if match:
            return self._job_route(ws, method, match.group(1))
        if rest == "/images":
            if method != "GET":
                return _error(405, "%s is not supported on images here; import with POST cos-images" % method)
            return 200, {"images": [self._image_view(ws, i, reference=True) for i in ws.images.values()]}
        match = re.match(r"^/images/([^/]+)$", rest)
        if match:
            image = ws.images.get(match.group(1)) or next((i for i in ws.images.values() if i["name"] == match.group(1)), None)
            if method not in ("GET", "DELETE"):
                return _error(405, "%s is not supported on an image" % method)
            if image is None:
                return _error(404, "image %s not found in cloud instance %s" % (match.group(1), ws.id))
            if method == "GET":
                return 200, self._image_view(ws, image)
            del ws.images[image["imageID"]]
            return 200, {}
        return _error(404, "no such route %s in cloud instance %s" % (rest, ws.id))

    def _job_route(self, ws, method, job_id):
        job = ws.jobs.get(job_id)
        if method not in ("GET", "DELETE"):
            return _error(405, "%s is not supported on a job" % method)
        if job is None:
            return _error(404, "job %s not found in cloud instance %s" % (job_id, ws.id))
        if method == "GET":
            return 200, self._job_view(job)
        if job["status"]["state"] not in JOB_DONE:
            return _error(409, "job %s is still %s" % (job["id"], job["status"]["state"]))
        del ws.jobs[job["id"]]
        return 200, {}

    @staticmethod
    def _job_view(job):
        return {k: json.loads(json.dumps(v)) for k, v in job.items() if not k.startswith("_")}

    @staticmethod
    def _image_view(ws, image, reference=False):
        """An Image (or, in a list, an ImageReference) with every field the reference requires, whatever the test stored."""
        storage_type = image.get("storageType") or DEFAULT_STORAGE_TYPE
        view = {"imageID": image["imageID"], "name": image["name"], "state": image.get("state") or "active",
                "description": image.get("description") or "", "storageType": storage_type,
                "storagePool": image.get("storagePool") or pool_name(storage_type),
                "creationDate": image.get("creationDate") or _now(), "lastUpdateDate": image.get("lastUpdateDate") or image.get("creationDate") or _now(),
                "specifications": dict(image.get("specifications") or {}),
                "crn": "%s%s" % (ws.crn.rstrip(":").rsplit(":", 1)[0] + ":image:", image["imageID"])}
        if reference:
            view["href"] = "/pcloud/v1/cloud-instances/%s/images/%s" % (ws.id, image["imageID"])
        else:
            size = image.get("size") or 1
            view.update(size=size, maxImageVolumeSize=image.get("maxImageVolumeSize") or size, volumes=image.get("volumes") or [],
                        servers=image.get("servers") or [], userTags=image.get("userTags") or [])
        return json.loads(json.dumps(view))

    def _import_problem(self, ws, body):
        """The 400 of a CreateCosImageImportJob body the reference refuses, else None."""
        wrong = [p for p in problems("CreateCosImageImportJob", body) if "is not in the reference" not in p]
        if wrong:
            return _error(400, "invalid body: %s" % "; ".join(wrong))
        access = body.get("bucketAccess") or "private"
        if access == "private" and not (body.get("accessKey") and body.get("secretKey")):
            return _error(400, "accessKey and secretKey are required for a bucket with private access")
        if body.get("storagePool"):
            if body["storagePool"] not in ws.pools():
                return _error(400, "storage pool %s is not in this cloud instance; pools: %s" % (body["storagePool"], ", ".join(ws.pools())))
        elif not body.get("storageAffinity"):
            wanted = body.get("storageType") or DEFAULT_STORAGE_TYPE
            if wanted not in ws.storage_types:
                return _error(400, "storage type %s is not supported in this cloud instance; supported: %s" % (wanted, ", ".join(ws.storage_types)))
        return None

    def _start_import(self, ws, body):
        problem = self._import_problem(ws, body)
        if problem:
            return problem
        with self.lock:
            if any(j["status"]["state"] not in JOB_DONE and j["operation"]["action"] == "imageImport" for j in ws.jobs.values()):
                return _error(409, "an image import job is already in progress for this cloud instance")
            job_id, image_id = str(uuid.uuid4()), str(uuid.uuid4())
            job = {"id": job_id, "createTimestamp": _now(), "operation": {"id": image_id, "target": "image", "action": "imageImport"},
                   "status": {"state": "queued", "progress": "0", "message": "image import job queued"}}
            ws.jobs[job_id] = job
        self.import_bodies.append({k: v for k, v in body.items() if k != "secretKey"})
        failure, self.fail_import = self.fail_import, None
        thread = threading.Thread(target=self._run_import, args=(ws, job, dict(body), failure), daemon=True)
        self._threads.append(thread)
        thread.start()
        return 202, {"id": job_id, "href": "/pcloud/v1/cloud-instances/%s/jobs/%s" % (ws.id, job_id)}

    def _pause(self, job, seconds):
        """Sleep ``seconds``, longer while jobs are held; a job failed from outside stops the wait."""
        deadline = time.monotonic() + seconds
        while (time.monotonic() < deadline or self.hold_jobs.is_set()) and not self._stopping.is_set():
            if job.get("_fail"):
                raise ValueError(job["_fail"])
            time.sleep(0.02)
        if job.get("_fail"):
            raise ValueError(job["_fail"])

    def _run_import(self, ws, job, body, failure):
        try:
            self._pause(job, self.queued_seconds)
            job["status"].update(state="running", progress="5", message="downloading image from cloud object storage")
            size = self._check_ova(body)
            for step in range(1, self.progress_steps + 1):
                self._pause(job, self.running_seconds / self.progress_steps)
                job["status"].update(progress=str(5 + 90 * step // self.progress_steps), message="importing image into storage")
            if failure:
                raise ValueError(failure)
        except Exception as exc:  # noqa: BLE001 - every failure is the job's message
            job["status"].update(state="failed", message="image import from cloud object storage failed: %s" % exc)
            return
        image_id = job["operation"]["id"]
        if body.get("storagePool"):
            pool = body["storagePool"]
            storage_type = ws.pools()[pool]
        else:
            storage_type = body.get("storageType") or DEFAULT_STORAGE_TYPE
            pool = pool_name(storage_type)
        gib = max(1, size // (1 << 30))
        ws.images[image_id] = {"imageID": image_id, "name": body["imageName"], "state": "active", "size": gib, "maxImageVolumeSize": gib,
                               "description": "", "storageType": storage_type, "storagePool": pool,
                               "creationDate": _now(), "lastUpdateDate": _now(), "userTags": list(body.get("userTags") or []),
                               "specifications": {"operatingSystem": body.get("osType") or "aix", "architecture": "ppc64",
                                                  "imageType": "stock-%s" % storage_type, "hypervisorType": "phyp",
                                                  "containerFormat": "bare", "diskFormat": "raw", "endianness": "big-endian"}}
        job["status"].update(state="completed", progress="100", message="image %s imported" % image_id)

    def _check_ova(self, body):
        import ibm_boto3
        from ibm_botocore.client import Config

        endpoint = self.cos_endpoints.get(body["region"])
        if endpoint is None:
            raise ValueError("unknown cloud object storage region %s" % body["region"])
        bucket, _unused, folder = body["bucketName"].partition("/")
        key = "%s/%s" % (folder, body["imageFilename"]) if folder else body["imageFilename"]
        client = ibm_boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=body.get("accessKey"), aws_secret_access_key=body.get("secretKey"),
                                  region_name=body["region"], config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        with tempfile.TemporaryDirectory(prefix="pvs-emulator-") as tmp:
            path = os.path.join(tmp, "image.ova")
            try:
                client.download_file(bucket, key, path)
            except Exception as exc:  # noqa: BLE001
                raise ValueError("could not read %s from bucket %s in region %s: %s" % (key, bucket, body["region"], exc)) from None
            return check_ova(path, tmp)


def check_ova(path, workdir):
    """Raise ValueError unless ``path`` is a tar with an OVF descriptor whose disk qemu-img reads; the OVA's size."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
            ovf = [n for n in members if n.endswith(".ovf")]
            if not ovf:
                raise ValueError("the OVA holds no OVF descriptor")
            root = ET.fromstring(tar.extractfile(members[ovf[0]]).read())
            hrefs = [el.get(k) for el in root.iter() if el.tag.endswith("}File") or el.tag == "File" for k in el.keys() if k.endswith("href")]
            if not hrefs or hrefs[0] not in members:
                raise ValueError("the OVF descriptor names no disk file of the OVA")
            tar.extract(members[hrefs[0]], workdir, filter="data")
    except (tarfile.TarError, ET.ParseError) as exc:
        raise ValueError("the object is not a valid OVA: %s" % exc) from None
    info = subprocess.run(["qemu-img", "info", "--output=json", os.path.join(workdir, hrefs[0])], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        raise ValueError("the disk %s cannot be read: %s" % (hrefs[0], info.stderr.strip()))
    return os.path.getsize(path)


def _handler_class(emulator):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self, status, payload, retry_after=None):
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.end_headers()
            self.wfile.write(data)
            if not self.path.startswith("/_emulator/"):
                emulator.requests.append((self.command, self.path, status))

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self):
            raw = self._body()
            parts = urllib.parse.urlsplit(self.path)
            path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query))
            if self.command == "POST" and path == "/identity/token":
                return self._answer(*emulator._token(urllib.parse.parse_qs(raw.decode())))  # pylint: disable=protected-access
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self._answer(*_error(400, "the request body is not JSON"))
            return self._answer(*emulator.handle(self.command, path, self.headers, body, query=query))

        do_GET = do_POST = do_DELETE = do_PUT = _dispatch

    return Handler


def main(argv=None):
    """``python -m tests.emulators.powervs --api-key-file F ...``: see powervs_control.main."""
    from tests.emulators.powervs_control import main as run  # pylint: disable=import-outside-toplevel

    return run(argv)


if __name__ == "__main__":
    main()
