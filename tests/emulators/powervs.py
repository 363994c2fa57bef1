# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""An IBM Power Virtual Server (PowerVS) API emulator for the tests, on a free 127.0.0.1 port.

It follows IBM's public API reference for the parts the collection uses:

- IAM: ``POST /identity/token`` (``grant_type=urn:ibm:params:oauth:grant-type:apikey``) answers a JWT
  access token with ``expires_in`` / ``expiration``; every API call needs ``Authorization: Bearer`` with a
  token that has not expired (else 401) and the ``CRN`` header of the workspace (else 403).
- ``GET /pcloud/v1/cloud-instances/{id}``: the workspace (404 when there is none).
- ``GET /pcloud/v1/cloud-instances/{id}/storage-capacity/types``: the storage types it offers.
- ``POST /pcloud/v1/cloud-instances/{id}/cos-images`` (CreateCosImageImportJob: ``imageName``,
  ``bucketName``, ``imageFilename``, ``region``, ``accessKey``/``secretKey``, ``bucketAccess``, ``osType``,
  ``storageType``, ``storagePool``, ``storageAffinity``) answers 202 ``{id, href}`` of a job; one import at
  a time per workspace (409 otherwise).
- ``GET /pcloud/v1/cloud-instances/{id}/jobs/{job_id}``: ``{id, operation: {id, target, action},
  status: {state, progress, message}, createTimestamp}``; state goes queued -> running -> completed
  (or failed).
- ``GET /pcloud/v1/cloud-instances/{id}/jobs`` (``{jobs: [...]}``), ``DELETE .../jobs/{job_id}`` (a finished job), and
  ``GET .../cos-images`` (the last import job).
- ``GET /pcloud/v1/cloud-instances/{id}/images``, ``GET`` / ``DELETE .../images/{image_id}``.

Errors have IBM's shape ``{code, description, error, message}``. The import reads the object from the
S3 server of its region (``cos_endpoints``) with the request's HMAC keys and checks it is an OVA
(a tar with an OVF descriptor whose disk qemu-img reads); anything else fails the job, as in the cloud.
``fail(method, path_regex, status, times)`` makes the next matching calls answer an error (429 with
Retry-After, 5xx, ...); ``fail_import`` makes the next import job fail.
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

from tests.peers.ports import free_port

OS_TYPES = ("aix", "ibmi", "rhel", "sles")
JOB_DONE = ("completed", "failed")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _error(code, description, error):
    return code, {"code": code, "description": description, "error": error, "message": description}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class Workspace:
    def __init__(self, ws_id, crn, region, storage_types):
        self.id, self.crn, self.region, self.storage_types = ws_id, crn, region, list(storage_types)
        self.images, self.jobs = {}, {}


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
        self._server = None
        self._threads = []

    # --- set-up -----------------------------------------------------------------------------------------------
    def add_workspace(self, region="us-south", storage_types=("tier0", "tier1", "tier3")):
        ws_id = str(uuid.uuid4())
        crn = "crn:v1:bluemix:public:power-iaas:%s:a/%s:%s::" % (region, uuid.uuid4().hex, ws_id)
        self.workspaces[ws_id] = Workspace(ws_id, crn, region, storage_types)
        return self.workspaces[ws_id]

    def fail(self, method, path_regex, status, times=1, retry_after=None):
        self._faults.append([method.upper(), re.compile(path_regex), status, times, retry_after])

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

    def handle(self, method, path, headers, body):
        fault = self._fault(method, path)
        if fault:
            status = fault[2]
            return status, _error(status, "injected failure", "too many requests" if status == 429 else "internal error")[1], fault[4]
        if not self._authorized(headers):
            return _error(401, "the access token is missing, invalid or expired", "unauthorized") + (None,)
        match = re.match(r"^/pcloud/v1/cloud-instances/([^/]+)(/.*)?$", path)
        if not match:
            return _error(404, "no such route %s" % path, "not found") + (None,)
        ws = self.workspaces.get(match.group(1))
        if ws is None:
            return _error(404, "cloud instance %s not found" % match.group(1), "not found") + (None,)
        if headers.get("CRN") != ws.crn:
            return _error(403, "the CRN header does not name cloud instance %s" % ws.id, "forbidden") + (None,)
        return self._route(ws, method, match.group(2) or "", body) + (None,)

    def _route(self, ws, method, rest, body):
        if method == "GET" and rest == "":
            return 200, {"cloudInstanceID": ws.id, "enabled": True, "initialized": True, "region": ws.region, "tenantID": "tenant",
                         "capabilities": ["power-edge-router"], "limits": {}, "usage": {}, "pvmInstances": []}
        if method == "GET" and rest == "/storage-capacity/types":
            return 200, {"maximumStorageAllocation": {"maxAllocationSize": 10000, "storagePool": "Tier1-Flash-1", "storageType": ws.storage_types[0]},
                         "storageTypesCapacity": [{"storageType": t, "maximumStorageAllocation": {"maxAllocationSize": 10000, "storageType": t,
                                                   "storagePool": "%s-pool-1" % t.capitalize()},
                                                   "storagePoolsCapacity": [{"poolName": "%s-pool-1" % t.capitalize(), "storageType": t}]}
                                                  for t in ws.storage_types]}
        if method == "POST" and rest == "/cos-images":
            return self._start_import(ws, body)
        if method == "GET" and rest == "/cos-images":  # the last image import job
            last = list(ws.jobs.values())[-1:]
            return (200, self._job_view(last[0])) if last else _error(404, "no image import job in cloud instance %s" % ws.id, "not found")
        if method == "GET" and rest == "/jobs":
            return 200, {"jobs": [self._job_view(j) for j in ws.jobs.values()]}
        match = re.match(r"^/jobs/([^/]+)$", rest)
        if match and method in ("GET", "DELETE"):
            job = ws.jobs.get(match.group(1))
            if job is None:
                return _error(404, "job %s not found" % match.group(1), "not found")
            if method == "DELETE":
                if job["status"]["state"] not in JOB_DONE:
                    return _error(409, "job %s is still %s" % (job["id"], job["status"]["state"]), "conflict")
                del ws.jobs[job["id"]]
                return 200, {}
            return 200, self._job_view(job)
        if method == "GET" and rest == "/images":
            return 200, {"images": [self._image_view(i, reference=True) for i in ws.images.values()]}
        match = re.match(r"^/images/([^/]+)$", rest)
        if match:
            image = ws.images.get(match.group(1)) or next((i for i in ws.images.values() if i["name"] == match.group(1)), None)
            if image is None:
                return _error(404, "image %s not found" % match.group(1), "not found")
            if method == "GET":
                return 200, self._image_view(image)
            if method == "DELETE":
                del ws.images[image["imageID"]]
                return 200, {}
        return _error(405, "%s %s is not supported" % (method, rest), "method not allowed")

    @staticmethod
    def _job_view(job):
        return json.loads(json.dumps(job))

    @staticmethod
    def _image_view(image, reference=False):
        view = dict(image)
        if reference:
            view = {k: image.get(k) for k in ("imageID", "name", "state", "creationDate", "lastUpdateDate", "specifications", "storageType", "storagePool")}
            view["href"] = "/pcloud/v1/images/%s" % image["imageID"]
        return json.loads(json.dumps(view))

    def _start_import(self, ws, body):
        missing = [k for k in ("imageName", "bucketName", "imageFilename", "region") if not body.get(k)]
        if missing:
            return _error(400, "missing required fields: %s" % ", ".join(missing), "bad request")
        if body.get("osType") and body["osType"] not in OS_TYPES:
            return _error(400, "osType %r is not one of %s" % (body["osType"], ", ".join(OS_TYPES)), "bad request")
        access = body.get("bucketAccess", "private")
        if access not in ("public", "private"):
            return _error(400, "bucketAccess must be public or private", "bad request")
        if access == "private" and not (body.get("accessKey") and body.get("secretKey")):
            return _error(400, "accessKey and secretKey are required for a bucket with private access", "bad request")
        if body.get("storageType") and not body.get("storagePool") and body["storageType"] not in ws.storage_types:
            return _error(400, "storage type %s is not supported in this cloud instance; supported: %s"
                          % (body["storageType"], ", ".join(ws.storage_types)), "bad request")
        if any(i["name"] == body["imageName"] for i in ws.images.values()):
            return _error(409, "an image named %s already exists" % body["imageName"], "conflict")
        if any(j["status"]["state"] not in JOB_DONE for j in ws.jobs.values()):
            return _error(409, "an image import job is already in progress for this cloud instance", "conflict")
        job_id = str(uuid.uuid4())
        job = {"id": job_id, "createTimestamp": _now(), "operation": {"id": body["imageName"], "target": "cloudConnectionImage", "action": "imageImportCos"},
               "status": {"state": "queued", "progress": "0", "message": ""}}
        ws.jobs[job_id] = job
        self.import_bodies.append({k: v for k, v in body.items() if k != "secretKey"})
        failure, self.fail_import = self.fail_import, None
        thread = threading.Thread(target=self._run_import, args=(ws, job, dict(body), failure), daemon=True)
        self._threads.append(thread)
        thread.start()
        return 202, {"id": job_id, "href": "/pcloud/v1/cloud-instances/%s/jobs/%s" % (ws.id, job_id)}

    def _run_import(self, ws, job, body, failure):
        time.sleep(self.queued_seconds)
        job["status"].update(state="running", progress="5", message="downloading image from cloud object storage")
        try:
            size = self._check_ova(body)
            for step in range(1, self.progress_steps + 1):
                time.sleep(self.running_seconds / self.progress_steps)
                job["status"].update(progress=str(5 + 90 * step // self.progress_steps), message="importing image into storage")
            if failure:
                raise ValueError(failure)
        except Exception as exc:  # noqa: BLE001 - every failure is the job's message
            job["status"].update(state="failed", message="image import from cloud object storage failed: %s" % exc)
            return
        image_id = str(uuid.uuid4())
        storage_type = body.get("storageType") or ws.storage_types[0]
        ws.images[image_id] = {"imageID": image_id, "name": body["imageName"], "state": "active", "size": max(1, size // (1 << 30)),
                               "storageType": storage_type, "storagePool": body.get("storagePool") or "%s-pool-1" % storage_type.capitalize(),
                               "creationDate": _now(), "lastUpdateDate": _now(),
                               "specifications": {"operatingSystem": body.get("osType") or "aix", "architecture": "ppc64",
                                                  "imageType": "stock-%s" % storage_type,
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
            emulator.requests.append((self.command, self.path, status))

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self):
            raw = self._body()
            path = urllib.parse.urlsplit(self.path).path
            if self.command == "POST" and path == "/identity/token":
                return self._answer(*emulator._token(urllib.parse.parse_qs(raw.decode())))  # pylint: disable=protected-access
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                return self._answer(*_error(400, "the request body is not JSON", "bad request"))
            return self._answer(*emulator.handle(self.command, path, self.headers, body))

        do_GET = do_POST = do_DELETE = do_PUT = _dispatch

    return Handler


def main(argv=None):
    """Run the emulator on its own: prints {url, iam_url, api_key, workspace_id, crn} as JSON, serves until interrupted.

    python -m tests.emulators.powervs --api-key KEY --cos us-south=http://127.0.0.1:9000 [--token-seconds 3600]
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--cos", action="append", default=[], help="REGION=S3_ENDPOINT, for the imports' reads")
    parser.add_argument("--token-seconds", type=int, default=3600)
    parser.add_argument("--region", default="us-south")
    args = parser.parse_args(argv)
    with PowerVSEmulator(args.api_key, dict(item.split("=", 1) for item in args.cos), token_seconds=args.token_seconds) as emulator:
        ws = emulator.add_workspace(region=args.region)
        print(json.dumps({"url": emulator.url, "iam_url": emulator.iam_url, "api_key": args.api_key, "workspace_id": ws.id, "crn": ws.crn}), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
