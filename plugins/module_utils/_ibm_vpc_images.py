# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target ``ibm_vpc``: the private image library of a VPC region.

VPC images carry no user tags, so the collection's mark on an image is its name: ``<server>-YYYYMMDD-HHMMSS`` (the
snapshot time) or ``<server>-latest``; its sha256 is the one VPC computed of the imported file (``file.checksums``).
Names are unique per region, so an import runs as: import under ``<server>-<snapshot time>`` and wait ``available``;
rename the previous ``<server>-latest`` to ``<server>-<its snapshot time>``; rename the new image ``<server>-latest``
(JSON merge patches). A failed import leaves the previous latest untouched. The name ``<server>-latest`` holds no
time, so once an image is renamed so, its id, snapshot time, sha256 and key are written to a small record beside the
image objects, ``<prefix><server>/ibm_vpc-<region>-latest.json``: the next import renames it after its *snapshot*
time (the seed named it after the import time). A latest the record does not describe (made by hand, record lost)
falls back to its ``created_at``.
"""

from __future__ import annotations

import json
import re

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _cos, _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

EXTRA_FIELDS = ("vpc_name",)  # the image's name in VPC (<server>-latest) beside its snapshot-time name
USABLE = ("available", "deprecated")


class Target(_providers.Target):
    name = "ibm_vpc"

    def __init__(self, params):
        super().__init__(params)
        self.api = vpcc.Base(params)
        self.server = _naming.check_server(params["server"])
        self._name = re.compile(r"^%s-(\d{8}-\d{6}|latest)$" % re.escape(self.server))

    @property
    def region(self):
        return self.api.vpc.get("region")

    def _open(self, action):
        p = self.params
        if not p.get("cos") or not p.get("bucket"):
            return None
        return _catalog.open_catalog(p["cos"], p["bucket"], p.get("prefix") or "", self.server, action)

    def _record_key(self, catalog):
        return "%s%s/ibm_vpc-%s-latest.json" % (catalog.prefix, self.server, self.region or "endpoint")

    def _record(self, catalog):
        """What the record says of ``<server>-latest``: ``{id, snapshot_time, sha256, key, guest_sha256}`` or {}."""
        if catalog is None:
            return {}
        try:
            return json.loads(catalog.client.get_object(Bucket=catalog.bucket, Key=self._record_key(catalog))["Body"].read())
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            if _cos.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return {}
            raise catalog._fail(exc, "read the latest image record", self._record_key(catalog)) from None  # pylint: disable=protected-access
        except ValueError:
            return {}

    def _save_record(self, catalog, image):
        body = {k: image.get(k) for k in ("id", "snapshot_time", "sha256", "key", "guest_sha256")}
        body.update(name=_naming.latest_name(self.server), region=self.region)
        try:
            catalog.client.put_object(Bucket=catalog.bucket, Key=self._record_key(catalog), Body=json.dumps(body).encode("utf-8"),
                                      ContentType="application/json")
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise catalog._fail(exc, "write the latest image record", self._record_key(catalog)) from None  # pylint: disable=protected-access

    def entries(self, record=None):
        """Images of this server, oldest first, each named by its snapshot time (``vpc_name`` is its name in VPC)."""
        record = record or {}
        out = []
        for image in self.api.pages("list images in region %s" % self.region, "list_images", "images", visibility="private"):
            match = self._name.match(image.get("name") or "")
            if not match:
                continue
            when = _naming.format_time(match.group(1)) if match.group(1) != "latest" else vpcc.iso(image.get("created_at"))
            recorded = record if match.group(1) == "latest" and record.get("id") == image["id"] else {}
            if recorded.get("snapshot_time"):
                when = _naming.format_time(recorded["snapshot_time"])
            file = image.get("file") or {}
            out.append({"name": _naming.image_name(self.server, when), "vpc_name": image["name"], "id": image["id"], "key": None, "format": "qcow2",
                        "size": (file.get("size") or 0) * vpcc.GIB, "sha256": (file.get("checksums") or {}).get("sha256"), "snapshot_time": when,
                        "source_fingerprint": None, "guest_sha256": recorded.get("guest_sha256"), "status": image.get("status"),
                        "latest": match.group(1) == "latest"})
        return sorted(out, key=lambda e: (e["snapshot_time"], e["name"]))

    def _manifest(self, entries):
        usable = [e for e in entries if e["status"] in USABLE]
        latest = next((e["name"] for e in usable if e["latest"]), None)
        return {"images": usable, "latest": latest}

    def _result(self, manifest, entries, image, previous, pruned, changed, orphaned=()):
        return _catalog.target_import_result(manifest, entries, image, previous, pruned, changed, orphaned, USABLE, EXTRA_FIELDS)

    def info(self):
        entries = self.entries(self._record(self._open("list images")))
        result = self._result(self._manifest(entries), entries, None, None, [], False)
        return {k: result[k] for k in ("changed", "images", "latest", "orphans")}

    # --- import -------------------------------------------------------------------------------------------------------------
    def check_os(self, os_name):
        if not os_name:
            raise ReplicationError("Failed to import image of server %s: its operating system is unknown; set ibm_vpc.operating_system "
                                   "(server_info returns the source's os)" % self.server)
        found = self.api.get_or_none("get_operating_system", os_name)
        if found is not None and found.get("allow_user_image_creation") is False:
            raise ReplicationError("Failed to import image of server %s: operating system %s of region %s takes no user images; set "
                                   "ibm_vpc.operating_system to one whose allow_user_image_creation is true" % (self.server, os_name, self.region),
                                   operating_system=os_name)
        if found is None:
            offered = sorted(o.get("name") for o in self.api.pages("list operating systems", "list_operating_systems", "operating_systems"))
            raise ReplicationError("Failed to import image of server %s: operating system %s is not offered in region %s; choose one of %s"
                                   % (self.server, os_name, self.region, ", ".join(offered) or "none"), operating_system=os_name)

    def import_image(self, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None,
                     check_mode=False, **extra):
        catalog = self._open("import image")
        if catalog is None:
            raise ReplicationError("Failed to import image %s of server %s: set cos and bucket (where the image object is)" % (key, self.server))
        image = catalog.describe(key, sha256, snapshot_time, source_fingerprint)
        catalog.check_format(key, "qcow2", image["size"])
        image.update(id=None, status="absent", vpc_name=image["name"], latest=False)
        entries = self.entries(self._record(catalog))
        manifest = self._manifest(entries)
        old_latest = next((e for e in manifest["images"] if e["latest"]), None)
        current = next((e for e in manifest["images"] if e["sha256"] == image["sha256"] or e["name"] == image["name"]), None)
        if current is not None:  # the same object (or snapshot) is already imported; a run cut off before its renames ends them
            current.update(key=key)
            previous, pruned = _catalog.plan_import(manifest, current, keep_last, keep_days)
            rotate = manifest["latest"] == current["name"] and not current["latest"]
            # The latest imported before digests were recorded: its record gets the object's, so that the next run of the same
            # content can stop before importing.
            record_digest = (current["latest"] or rotate) and current["sha256"] == image["sha256"] and not current.get("guest_sha256")
            if record_digest:
                current.update(catalog.guest_digest(key, extra.get("verify_digest", True), check_mode))
            orphaned = []
            if not check_mode:
                if rotate:
                    self._rotate(catalog, current, old_latest)
                elif record_digest and current.get("guest_sha256"):
                    self._save_record(catalog, current)
                orphaned = self._delete(pruned)
            return self._result(manifest, entries, current, previous if rotate else None, pruned, bool(pruned) or rotate, orphaned)
        os_name = extra.get("operating_system") or self.api.vpc.get("operating_system")
        self.check_os(os_name)
        image.update(catalog.guest_digest(key, extra.get("verify_digest", True), check_mode))
        planned = {"images": manifest["images"] + [image], "latest": manifest["latest"]}
        previous, pruned = _catalog.plan_import(planned, image, keep_last, keep_days)
        if check_mode:
            return self._result(planned, entries, image, previous, pruned, True)
        self._delete([e for e in entries if e["vpc_name"] == image["name"]], strict=True)  # a failed import of the same snapshot
        made = self._import(key, image, os_name)
        image.update(id=made["id"], status=made.get("status"), size=((made.get("file") or {}).get("size") or 0) * vpcc.GIB or image["size"])
        if planned["latest"] == image["name"]:
            self._rotate(catalog, image, old_latest)
        orphaned = self._delete(pruned)
        return self._result(planned, entries, image, previous, pruned, True, orphaned)

    def _rotate(self, catalog, image, old_latest):
        """The previous ``<server>-latest`` takes its snapshot-time name, then ``image`` becomes ``<server>-latest`` (names are unique)."""
        if old_latest is not None and old_latest is not image:
            self._rename(old_latest, old_latest["name"])
            old_latest.update(vpc_name=old_latest["name"], latest=False)
        self._rename(image, _naming.latest_name(self.server))
        image.update(vpc_name=_naming.latest_name(self.server), latest=True)
        self._save_record(catalog, image)

    def _import(self, key, image, os_name):
        cos = self.params.get("cos") or {}
        cos_region = self.api.vpc.get("cos_region") or cos.get("region") or self.region
        href = "cos://%s/%s/%s" % (cos_region, self.params["bucket"], key)
        action = "import image %s from %s" % (image["name"], href)
        proto = {"name": image["name"], "file": {"href": href}, "operating_system": {"name": os_name}}
        made = self.api.call(action, "bucket %s" % self.params["bucket"], "create_image", proto, bucket=self.params["bucket"])

        def probe():
            found = self.api.call(action, "image %s" % image["name"], "get_image", made["id"])
            return found.get("status") == "available", {"status": found.get("status"), "reasons": found.get("status_reasons"), "image": found}
        try:
            return vpcc.wait(probe, self.params, "image %s" % image["name"], ("failed", "deleting"), action)["image"]
        except ReplicationError as exc:
            # A failed or unfinished image is removed; the previous latest was not touched.
            gone = self._discard(image["name"], made["id"])
            state = exc.details.get("state") or {}
            if state.get("status") != "failed":  # a timeout or an API error while waiting: nothing is known of the object
                raise ReplicationError(exc.msg + gone, key=key, state=state) from None
            reasons = " ".join("%s %s" % (r.get("code"), r.get("message")) for r in state.get("reasons") or []).lower()
            bucket = self.params["bucket"]
            if "not found" in reasons or "does not exist" in reasons:
                todo = "upload s3://%s/%s again with vmimage.replication.cos_upload (the VPC image service did not find it)" % (bucket, key)
            elif any(word in reasons for word in ("authoriz", "authoris", "access", "forbidden", "permission")):
                todo = ("authorise the VPC image service to read bucket %s (IAM service-to-service authorisation: VPC Infrastructure Services, "
                        "Image Service for VPC -> Cloud Object Storage, Reader)" % bucket)
            else:
                todo = "check that s3://%s/%s is a whole QCOW2 image (upload it again) and that the VPC image service may read the bucket" % (bucket, key)
            raise ReplicationError("%s; %s%s" % (exc.msg, todo, gone), key=key, state=state) from None

    def _discard(self, name, image_id):
        """Ask VPC to delete an image that failed or did not finish (no wait: ``deleting`` is enough); what became of it, for the error."""
        try:
            self.api.call("delete image %s" % name, "image %s" % name, "delete_image", image_id)
        except ReplicationError as exc:
            if exc.details.get("code") != 404:
                return "; delete image %s (%s) by hand: %s" % (name, image_id, exc.msg)
        return "; image %s was deleted" % name

    def _rename(self, entry, new_name):
        self.api.call("rename image %s to %s" % (entry["vpc_name"], new_name), "image %s" % entry["vpc_name"], "update_image", entry["id"],
                      {"name": new_name})

    def remove_image(self, name, force=False, check_mode=False):
        entries = self.entries(self._record(self._open("remove image")))
        manifest = self._manifest(entries)
        # The latest is the image named <server>-latest: removing it leaves none until the next import.
        entry, previous = _catalog.plan_remove(manifest, name, self.server, force, promote=False, candidates=entries)
        if entry is None:
            return self._result(manifest, entries, None, None, [], False)
        orphaned = [] if check_mode else self._delete([entry])
        return self._result(manifest, entries, entry, previous, [], True, orphaned)

    def _delete(self, entries, strict=False):
        def delete_one(entry):
            self.api.call("delete image %s" % entry["name"], "image %s" % entry["name"], "delete_image", entry["id"])
            self.api.wait_gone("get_image", entry["id"], "image %s" % entry["name"], "delete image %s" % entry["name"])
        return _catalog.delete_target_images(entries, delete_one, strict)
