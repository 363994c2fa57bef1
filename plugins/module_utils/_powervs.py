# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target ``powervs``: the boot image catalog of an IBM Power Virtual Server workspace.

The PowerVS images API lists, gets and deletes images but cannot rename them, and images carry no tags
or metadata of ours. So each import is named ``<server>-<YYYYMMDD-HHMMSS>`` from the time of its export
(the object's ``snapshot-time``) and never renamed: the latest is the newest active image whose name has
exactly that form, and retention only ever touches images named so. An image of that name already active
is the same export: it is not imported again. Pruning and the removal of a failed import's leftovers run
only after the new image is active, so a failed import leaves the catalog as it was.
"""

from __future__ import annotations

import re
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _errors, _naming, _provider_options, _providers, _wait
from ansible_collections.vmimage.replication.plugins.module_utils._errors import FailedState, ReplicationError, WaitTimeout
from ansible_collections.vmimage.replication.plugins.module_utils._files import write_json
from ansible_collections.vmimage.replication.plugins.module_utils._powervs_client import (
    DEFAULT_IAM_URL, DEFAULT_URL, ApiException, PowerVSClient, explain,
)

OPTIONS = _provider_options.POWERVS
EXTRA_FIELDS = ("storage_type", "created")  # what a PowerVS image record adds to _catalog.TARGET_IMAGE_FIELDS


def new_module(spec, action, groups, needs_cos=False, **kwargs):
    """The ReplicationModule of a PowerVS module (pvs_import, pvs_image_info): option target, the libraries checked."""
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos  # pylint: disable=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule  # pylint: disable=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils._powervs_client import IMPORT_ERROR  # pylint: disable=import-outside-toplevel

    module = ReplicationModule(dict(spec, target=dict(type="str", choices=["powervs"], default="powervs")), groups=groups, action=action, **kwargs)
    if needs_cos:
        module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    module.require_library("ibm-cloud-sdk-core", IMPORT_ERROR)
    return module


class Target(_providers.Target):
    name = "powervs"

    def __init__(self, params):
        super().__init__(params)
        self.pvs = params.get("powervs") or {}
        if not self.pvs:
            raise ReplicationError("Failed to use target powervs for %s: option powervs is not set; give its workspace_id, crn, region or url "
                                   "and api_key" % params.get("server"))
        self.server = params["server"]
        self._name = re.compile(r"^%s-(\d{8}-\d{6})$" % re.escape(_naming.check_server(self.server)))
        self._client = None

    # --- the workspace --------------------------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            pvs = self.pvs
            url = pvs.get("url") or (DEFAULT_URL % pvs["region"] if pvs.get("region") else None)
            if not url:
                raise ReplicationError("Failed to use PowerVS workspace %s: set powervs.region (for example us-south) or powervs.url" % pvs["workspace_id"])
            self._client = PowerVSClient(pvs["workspace_id"], pvs["crn"], pvs.get("api_key"), url, pvs.get("iam_url") or DEFAULT_IAM_URL,
                                         pvs.get("validate_certs", True), pvs.get("max_retries", 4), pvs.get("retry_interval", 30.0))
        return self._client

    def _call(self, action, func, *args):
        try:
            return func(*args)
        except ApiException as exc:
            hint = ""
            response = getattr(exc, "http_response", None)
            if response is not None and "/identity/token" in (response.url or ""):
                hint = "; no IAM token: check powervs.api_key and powervs.iam_url"
            elif getattr(exc, "code", None) == 404 and action.startswith("find workspace"):
                hint = "; check powervs.workspace_id and powervs.region/url"
            elif getattr(exc, "code", None) in (401, 403):
                hint = "; check powervs.api_key and powervs.crn"
            raise ReplicationError("Failed to %s in PowerVS workspace %s: %s%s" % (action, self.pvs["workspace_id"], explain(exc), hint),
                                   workspace=self.pvs["workspace_id"], code=getattr(exc, "code", None)) from None

    def _check_workspace(self):
        self._call("find workspace", self.client.workspace)
        wanted = self.pvs.get("storage_type")
        if wanted and not self.pvs.get("storage_pool"):
            offered = self._call("list storage types", self.client.storage_types)
            if offered and wanted not in offered:
                raise ReplicationError("Failed to import image into PowerVS workspace %s: storage type %s is not offered there; "
                                       "set powervs.storage_type to one of %s"
                                       % (self.pvs["workspace_id"], wanted, ", ".join(offered)), storage_types=offered)

    def _entries(self):
        """Images of this server (named ``<server>-<stamp>``), oldest first, as entries for ``_catalog.plan_import``."""
        entries = []
        for image in self._call("list images", self.client.images):
            match = self._name.match(image.get("name") or "")
            if match:
                entries.append({"name": image["name"], "id": image.get("imageID"), "key": None, "format": "ova", "size": image.get("size"),
                                "sha256": None, "snapshot_time": _naming.format_time(match.group(1)), "source_fingerprint": None,
                                "status": image.get("state"), "storage_type": image.get("storageType"), "created": image.get("creationDate")})
        return sorted(entries, key=lambda e: (e["snapshot_time"], e["name"]))

    @staticmethod
    def _manifest(entries):
        active = [e for e in entries if e["status"] == "active"]
        return {"images": active, "latest": active[-1]["name"] if active else None}

    @staticmethod
    def _result(manifest, entries, image, previous, pruned, changed, orphaned=()):
        return _catalog.target_import_result(manifest, entries, image, previous, pruned, changed, orphaned, ("active",), EXTRA_FIELDS)

    # --- verbs ----------------------------------------------------------------------------------------------------------------
    def info(self):
        self._call("find workspace", self.client.workspace)
        entries = self._entries()
        manifest = self._manifest(entries)
        result = self._result(manifest, entries, None, None, [], False)
        return {k: result[k] for k in ("changed", "images", "latest", "orphans")}

    def import_image(self, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None,
                     check_mode=False, **extra):
        p = self.params
        catalog = _catalog.open_catalog(p["cos"], p["bucket"], p.get("prefix") or "", self.server, "import image")
        image = catalog.describe(key, sha256, snapshot_time, source_fingerprint)
        catalog.check_format(key, "ova", image["size"])
        image.update(id=None, status="absent", storage_type=self.pvs.get("storage_type"), created=None)
        self._check_workspace()
        entries = self._entries()
        manifest = self._manifest(entries)
        current = next((e for e in manifest["images"] if e["name"] == image["name"]), None)
        if current is not None:
            current.update(key=key, sha256=image["sha256"])
            previous, pruned = _catalog.plan_import(manifest, current, keep_last, keep_days)
            orphaned = [] if check_mode else self._delete(pruned)
            return self._result(manifest, entries, current, previous, pruned, bool(pruned), orphaned)
        image.update(catalog.guest_digest(key, extra.get("verify_digest", True), check_mode))
        planned = {"images": manifest["images"] + [image], "latest": manifest["latest"]}
        previous, pruned = _catalog.plan_import(planned, image, keep_last, keep_days)
        if check_mode:
            return self._result(planned, entries, image, previous, pruned, True)
        leftovers = [e for e in entries if e["name"] == image["name"]]  # a failed import of the same export
        self._delete(leftovers, strict=True)
        try:
            job = self._import(key, image)
        except BaseException as exc:
            if isinstance(exc, _errors._Terminated):  # pylint: disable=protected-access
                self._abandon_import(image)
            raise
        made = next((e for e in self._entries() if e["name"] == image["name"]), None)
        if made is None or made["status"] != "active":
            raise ReplicationError("Failed to import image %s into PowerVS workspace %s: job %s completed but the image is %s; run the import again"
                                   % (image["name"], self.pvs["workspace_id"], job["id"], made["status"] if made else "missing"), job_id=job["id"])
        made.update(key=key, sha256=image["sha256"], source_fingerprint=image["source_fingerprint"])
        planned["images"] = [made if e is image else e for e in planned["images"]]
        orphaned = self._delete(pruned)
        result = self._result(planned, entries, made, previous, pruned, True, orphaned)
        result["job"] = job
        return result

    def remove_image(self, name, force=False, check_mode=False):
        entries = self._entries()
        manifest = self._manifest(entries)
        entry, previous = _catalog.plan_remove(manifest, name, self.server, force, candidates=entries)
        if entry is None:
            return self._result(manifest, entries, None, None, [], False)
        orphaned = [] if check_mode else self._delete([entry])
        return self._result(manifest, entries, entry, previous, [], True, orphaned)

    # --- helpers --------------------------------------------------------------------------------------------------------------
    def _delete(self, entries, strict=False):
        def delete_one(entry):
            self._call("delete image %s" % entry["name"], self.client.delete_image, entry["id"])

        return _catalog.delete_target_images(entries, delete_one, strict)

    def _body(self, key, image):
        p, pvs, cos = self.params, self.pvs, self.params["cos"]
        body = {"imageName": image["name"], "bucketName": p["bucket"], "imageFilename": key, "region": cos.get("region") or pvs.get("region"),
                "bucketAccess": pvs.get("bucket_access") or "private"}
        if body["bucketAccess"] == "private":
            if not cos.get("access_key_id"):
                raise ReplicationError("Failed to import image %s into PowerVS: PowerVS reads a private bucket with HMAC keys; set cos.access_key_id and "
                                       "cos.secret_access_key (an API key is not accepted there)" % image["name"])
            body.update(accessKey=cos["access_key_id"], secretKey=cos["secret_access_key"])
        if not body["region"]:
            raise ReplicationError("Failed to import image %s into PowerVS: the bucket's region is unknown; set cos.region" % image["name"])
        for option, field in (("storage_type", "storageType"), ("storage_pool", "storagePool"), ("os_type", "osType")):
            if pvs.get(option):
                body[field] = pvs[option]
        if pvs.get("affinity_policy"):
            body["storageAffinity"] = {"affinityPolicy": pvs["affinity_policy"]}
            if pvs.get("affinity_volume"):
                body["storageAffinity"]["affinityVolume"] = pvs["affinity_volume"]
        return body

    def _abandon_import(self, image):
        """A cancelled run (SIGTERM: ansible-runner's cancel, the watchdog) leaves the catalog as it was. PowerVS cannot stop
        an import job, so follow it to its end (within wait_timeout) and delete the image it made. Nobody reads this
        follower's errors, so a transient one (a refused connection, a token call, a 5xx) only means: try again."""
        job_id = getattr(self, "_job_id", None)
        deadline = time.monotonic() + float(self.params.get("wait_timeout") or 21600)
        pause = float(self.params.get("wait_sleep") or 30.0)
        if job_id and self.params.get("progress_file"):  # what a reader of the progress sees: the run is over, its job is not
            write_json(self.params["progress_file"], {"stage": "import", "state": "cancelled", "job_id": job_id, "image": image["name"],
                                                      "message": "cancelled: following the import job to its end to delete its image",
                                                      "updated": time.time()}, durable=False)

        def job_over():
            try:
                state = ((self.client.job(job_id) or {}).get("status") or {}).get("state")
            except (ApiException, ReplicationError, OSError):  # transient: nobody reads this follower's errors
                state = None
            return state in ("completed", "failed"), state

        def image_deleted():
            try:
                self._delete([e for e in self._entries() if e["name"] == image["name"]], strict=True)
            except (ApiException, ReplicationError, OSError) as exc:
                return False, exc
            return True, None

        if job_id:
            try:
                _wait.wait_until(job_over, deadline - time.monotonic(), pause, what="import job %s" % job_id)
            except WaitTimeout:
                pass  # past the deadline: delete what is there now, once
        try:
            _wait.wait_until(image_deleted, max(0.0, deadline - time.monotonic()), pause, what="image %s" % image["name"])
        except WaitTimeout as exc:
            raise exc.last_state from None

    def _import(self, key, image):
        reference = self._call("start the import of image %s" % image["name"], self.client.import_cos, self._body(key, image))
        job_id = self._job_id = reference["id"]
        progress_file = self.params.get("progress_file")
        seen = {"job": {"id": job_id, "state": "queued", "progress": 0, "message": ""}}

        def probe():
            try:
                answer = self.client.job(job_id)
            except ApiException as exc:  # retries are spent: keep waiting within the deadline on throttling and server errors
                if getattr(exc, "code", 0) in (429, 500, 502, 503, 504):
                    return False, seen["job"]
                raise
            status = answer.get("status") or {}
            try:
                percent = float(status.get("progress") or 0)
            except ValueError:
                percent = 0.0
            seen["job"] = {"id": job_id, "status": status.get("state"), "state": status.get("state"), "progress": percent,
                           "message": status.get("message") or ""}
            if progress_file:
                write_json(progress_file, {"stage": "import", "state": status.get("state"), "percent": percent, "message": seen["job"]["message"],
                                           "job_id": job_id, "image": image["name"], "updated": time.time()}, durable=False)
            return status.get("state") == "completed", seen["job"]

        try:
            return _wait.wait_until(probe, self.params.get("wait_timeout") or 21600, self.params.get("wait_sleep") or 30.0,
                                    failure_states=("failed",), what="import job %s" % job_id)
        except FailedState as exc:
            self._delete([e for e in self._entries() if e["name"] == image["name"]])
            raise ReplicationError("Failed to import image %s into PowerVS workspace %s: job %s failed: %s; fix the cause and run again"
                                   % (image["name"], self.pvs["workspace_id"], job_id, exc.state.get("message")), job=exc.state) from None
        except WaitTimeout as exc:
            raise ReplicationError("Failed to import image %s into PowerVS workspace %s: job %s still %s after %ss (%s%%); raise wait_timeout or "
                                   "follow the job" % (image["name"], self.pvs["workspace_id"], job_id, exc.last_state.get("state"),
                                                       self.params.get("wait_timeout"), exc.last_state.get("progress")), job=exc.last_state) from None
        except ApiException as exc:
            raise ReplicationError("Failed to follow import job %s of image %s: %s" % (job_id, image["name"], explain(exc)), job_id=job_id) from None
