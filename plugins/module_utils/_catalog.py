# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The bucket catalog: a bucket used as the image library of a server.

Image objects are immutable, one per snapshot time, uploaded beforehand by
cos_upload. The catalog of a server is one small object,
``<prefix><server>/catalog.json``, listing its images and naming the latest.
It is written with a single PUT after the new object was validated, and the
objects of pruned or removed images are deleted only after that PUT succeeded:
a failed import leaves the previous catalog (and with it the previous
``<server>-latest``) untouched, and the catalog never lists a deleted object.
An object whose delete fails stays behind as an orphan (``info`` lists it) and
is reported in the result's ``orphaned``.
"""

from __future__ import annotations

import datetime
import json

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _digest, _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MANIFEST = "catalog.json"
VERSION = 1
PUBLIC = ("name", "key", "sha256", "snapshot_time", "size", "format", "source_fingerprint", "guest_sha256")
# Where each format shows who it is: (offset, magic). Formats not listed are not checked.
MAGIC = {"qcow2": (0, b"QFI\xfb"), "vpc": (0, b"conectix"), "vhd": (0, b"conectix"), "ova": (257, b"ustar")}


def manifest_key(prefix, server):
    return "%s%s/%s" % (_naming.normalize_prefix(prefix), _naming.check_server(server), MANIFEST)


def public(entry):
    """An image as modules return it, or None."""
    return {k: entry.get(k) for k in PUBLIC} if entry else None


# The record of an image in a cloud's image catalog (targets ibm_vpc, powervs, ...), as their modules return it.
TARGET_IMAGE_FIELDS = ("name", "id", "key", "format", "size", "sha256", "snapshot_time", "source_fingerprint", "guest_sha256", "status")


def target_image_record(entry, extra_fields=()):
    """An image of a cloud image catalog as modules return it: TARGET_IMAGE_FIELDS and the target's ``extra_fields``; None for None."""
    return {k: entry.get(k) for k in TARGET_IMAGE_FIELDS + tuple(extra_fields)} if entry else None


def target_import_result(manifest, entries, image, previous, pruned, changed, orphaned=(), usable_states=("active",), extra_fields=()):
    """What a cloud target's info / import / remove returns (the shape of the bucket catalog's, plus ``orphans``).

    ``manifest`` is the target's view ``{latest, images}``; ``entries`` every image of the server, of which those whose
    ``status`` is not in ``usable_states`` are ``orphans`` (failed or half-made imports)."""
    def record(entry):
        return target_image_record(entry, extra_fields)

    latest = _by_name(manifest, manifest["latest"]) if manifest["latest"] else None
    result = _import_result(record, manifest["images"], latest, image, previous, pruned, changed, orphaned)
    result["orphans"] = [record(e) for e in entries if e["status"] not in usable_states]
    return result


def delete_target_images(entries, delete_one, strict=False):
    """Delete each image entry with ``delete_one(entry)`` (raising ReplicationError); one already gone (code 404) is fine.

    Returns the ones that could not be deleted as ``orphaned`` records {name, id, key, msg}; ``strict`` raises at the first."""
    orphaned = []
    for entry in entries:
        try:
            delete_one(entry)
        except ReplicationError as exc:
            if exc.details.get("code") == 404:
                continue
            if strict:
                raise
            orphaned.append({"name": entry["name"], "id": entry["id"], "key": entry.get("key"), "msg": exc.msg})
    return orphaned


def _import_result(record, images, latest, image, previous, pruned, changed, orphaned):
    return dict(changed=changed, image=record(image) or {}, latest=record(latest), previous_latest=record(previous),
                pruned=[e["name"] for e in pruned], images=[record(e) for e in images], orphaned=list(orphaned))


def _by_name(manifest, name):
    for entry in manifest["images"]:
        if entry["name"] == name:
            return entry
    return None


def _sorted(images):
    return sorted(images, key=lambda e: (_naming.parse_time(e["snapshot_time"]), e["name"]))


class Catalog:
    """The catalog of one server in one bucket."""

    def __init__(self, client, cos, bucket, prefix, server):
        self.client, self.cos, self.bucket, self.server = client, cos, bucket, server
        self.prefix = _naming.normalize_prefix(prefix)
        self.key = manifest_key(prefix, server)

    def _fail(self, exc, action, key=None):
        return ReplicationError(_cos.explain(exc, action, self.cos, self.bucket, key), bucket=self.bucket, endpoint=self.cos.get("endpoint"),
                                code=_cos.error_code(exc))

    def load(self):
        """The manifest: {images: [...], latest: name or None}; an empty one when there is none yet."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            if _cos.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return {"images": [], "latest": None}
            raise self._fail(exc, "read catalog", self.key) from None
        try:
            data = json.loads(body)
            images = [dict(e) for e in data["images"]]
            for entry in images:
                _naming.parse_time(entry["snapshot_time"])
                entry["name"], entry["key"]  # pylint: disable=pointless-statement
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplicationError(
                "Failed to read catalog s3://%s/%s: it is not a catalog written by vmimage.replication (%s); "
                "move it away, then re-import the images" % (self.bucket, self.key, exc)
            ) from None
        return {"images": _sorted(images), "latest": data.get("latest")}

    def save(self, manifest):
        body = {
            "format_version": VERSION, "created-by": _naming.CREATED_BY, "server": self.server,
            "latest": manifest["latest"], "latest_name": _naming.latest_name(self.server), "images": _sorted(manifest["images"]),
        }
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=json.dumps(body, indent=2, sort_keys=True).encode("utf-8"),
                ContentType="application/json", Metadata={"created-by": _naming.CREATED_BY, "source-server": self.server},
            )
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise self._fail(exc, "write catalog", self.key) from None

    def head(self, key):
        try:
            return _cos.head(self.client, self.bucket, key)
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise self._fail(exc, "read image", key) from None

    def delete_unlisted(self, entries):
        """Delete the objects of ``entries``, which the saved catalog no longer lists.

        A delete that fails leaves the object as an orphan: the keys of those are returned, with the reason, not raised,
        because the catalog is already written.
        """
        orphaned = []
        for entry in entries:
            try:
                self.delete(entry["key"])
            except ReplicationError as exc:
                orphaned.append({"key": entry["key"], "name": entry["name"], "msg": exc.msg})
        return orphaned

    def delete(self, key):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            if _cos.error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
                raise self._fail(exc, "delete image", key) from None

    def read_range(self, key, length):
        """The first ``length`` bytes of the object (fewer when it is shorter).

        Reads exactly that many bytes: some servers (rclone) send the whole
        object's x-amz-checksum with a ranged answer, which the SDK would check
        against the part when the body is read to its end.
        """
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range="bytes=0-%d" % (length - 1))["Body"]
            try:
                return body.read(length)
            finally:
                body.close()
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise self._fail(exc, "read image", key) from None

    def guest_digest(self, key, verify=True, check_mode=False):
        """``{"guest_sha256": ...}`` recorded on the object (recomputed from it and checked when ``verify``, not in check
        mode), or {}."""
        try:
            return _digest.import_check(self.client, self.bucket, key, verify and not check_mode)
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise self._fail(exc, "verify the guest digest of image", key) from None

    def check_format(self, key, fmt, size):
        """Raise unless the object's first bytes are those of ``fmt`` (formats without a magic are not checked)."""
        if fmt not in MAGIC:
            return
        offset, magic = MAGIC[fmt]
        head = self.read_range(key, offset + len(magic)) if size else b""
        if head[offset:offset + len(magic)] != magic:
            raise ReplicationError(
                "Failed to import image s3://%s/%s: the object is declared %s but is not %s (its first bytes are %r); "
                "upload the converted image again" % (self.bucket, key, fmt, fmt, head[:8]), key=key,
            )

    def describe(self, key, sha256=None, snapshot_time=None, source_fingerprint=None):
        """The catalog entry of the object at ``key``, after checking it exists and is what it claims to be."""
        obj = self.head(key)
        where = "s3://%s/%s" % (self.bucket, key)
        if obj is None:
            raise ReplicationError("Failed to import image %s: the object does not exist at %s; upload it with vmimage.replication.cos_upload first"
                                   % (where, self.cos.get("endpoint")), key=key)
        meta = obj["metadata"]
        found = meta.get("sha256")
        if not found:
            raise ReplicationError("Failed to import image %s: the object has no sha256 metadata; upload it with vmimage.replication.cos_upload" % where,
                                   key=key)
        if sha256 and sha256.lower() != found.lower():
            raise ReplicationError("Failed to import image %s: its sha256 is %s, not the expected %s; upload the image again" % (where, found, sha256),
                                   key=key, sha256=found)
        owner = meta.get("source-server")
        if owner and owner != self.server:
            raise ReplicationError("Failed to import image %s: it is an image of server %s, not %s; check the key and server" % (where, owner, self.server),
                                   key=key)
        times = [t for t in (snapshot_time, meta.get("snapshot-time")) if t]
        if not times:
            raise ReplicationError("Failed to import image %s: its snapshot time is unknown; set snapshot_time" % where, key=key)
        try:
            parsed = [_naming.format_time(t) for t in times]
        except ValueError as exc:
            raise ReplicationError("Failed to import image %s: %s" % (where, exc), key=key) from None
        if len(set(parsed)) > 1:
            raise ReplicationError("Failed to import image %s: snapshot_time %s differs from the object's snapshot-time %s; check which snapshot it is"
                                   % (where, parsed[0], parsed[1]), key=key)
        fmt = (meta.get("format") or key.rsplit(".", 1)[-1]).lower()
        return {
            "name": _naming.image_name(self.server, parsed[0]), "key": key, "sha256": found.lower(), "snapshot_time": parsed[0],
            "size": obj["size"], "format": fmt, "source_fingerprint": source_fingerprint or meta.get("source-fingerprint") or None,
        }

    def orphans(self, manifest):
        """Objects under the server's prefix that carry created-by vmimage.replication but are not in the catalog."""
        known = set(e["key"] for e in manifest["images"]) | {self.key}
        found = []
        kwargs = {"Bucket": self.bucket, "Prefix": "%s%s/" % (self.prefix, self.server)}
        try:
            while True:
                page = self.client.list_objects_v2(**kwargs)
                for item in page.get("Contents") or []:
                    if item["Key"] in known:
                        continue
                    obj = _cos.head(self.client, self.bucket, item["Key"])
                    if obj and obj["metadata"].get("created-by") == _naming.CREATED_BY:
                        meta = obj["metadata"]
                        # The listing's time, as cos_object_prune ages objects (a server may answer HEAD otherwise).
                        listed = _cos.utc_text(item.get("LastModified")) or obj["last_modified"]
                        found.append({"key": item["Key"], "size": obj["size"], "sha256": meta.get("sha256"),
                                      "snapshot_time": meta.get("snapshot-time"), "last_modified": listed})
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise self._fail(exc, "list images of server %s in" % self.server) from None
        return found


def connect(cos):
    """An S3 client for ``cos`` (a bad cos.endpoint is already a ReplicationError naming the option)."""
    return _cos.connect(cos)


def open_catalog(cos, bucket, prefix, server, action):
    """The Catalog of ``server`` in ``bucket``, connected and with the bucket checked; ``action`` words the errors."""
    try:
        catalog = Catalog(None, cos, bucket, prefix, server)
    except ValueError as exc:
        raise ReplicationError("Failed to %s of server %s: %s" % (action, server, exc)) from None
    catalog.client = connect(cos)
    _cos.check_bucket(catalog.client, cos, bucket)
    return catalog


def _result(manifest, image, previous, pruned, changed, orphaned=()):
    latest = _by_name(manifest, manifest["latest"]) if manifest["latest"] else None
    return _import_result(public, _sorted(manifest["images"]), latest, image, previous, pruned, changed, orphaned)


def plan_import(manifest, image, keep_last, keep_days=None, now=None):
    """Rotate and prune ``manifest`` (its ``images`` already hold ``image``) in place; ``(previous latest, pruned entries)``.

    The newest image by snapshot time is the latest: an older snapshot is added without moving it.
    Pure, so that a check-mode run can show the same answer for an image not uploaded yet.
    """
    latest = _by_name(manifest, manifest["latest"]) if manifest["latest"] else None
    previous = None
    if latest is None or _naming.parse_time(image["snapshot_time"]) > _naming.parse_time(latest["snapshot_time"]):
        previous = latest
        manifest["latest"] = image["name"]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    pruned = [e for e in _naming.select_prune(manifest["images"], keep_last, keep_days, now, latest=manifest["latest"]) if e["name"] != image["name"]]
    manifest["images"] = [e for e in manifest["images"] if e not in pruned]
    return previous, pruned


def import_image(catalog, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None, check_mode=False, now=None,
                 verify_digest=True):
    """Add the object at ``key`` to the catalog, rotate the latest, prune past retention.

    The newest image by snapshot time is the latest: importing an older snapshot
    adds it without moving the latest.
    """
    before = catalog.load()
    manifest = {"images": [dict(e) for e in before["images"]], "latest": before["latest"]}
    current = [e for e in manifest["images"] if e["key"] == key]
    obj = catalog.head(key)
    if current and obj and obj["metadata"].get("sha256", "").lower() == current[0]["sha256"] and (not sha256 or sha256.lower() == current[0]["sha256"]):
        image = current[0]
    else:
        image = catalog.describe(key, sha256, snapshot_time, source_fingerprint)
        catalog.check_format(key, image["format"], image["size"])
        image.update(catalog.guest_digest(key, verify_digest, check_mode))
        clash = _by_name(manifest, image["name"])
        if clash and clash["key"] != key:
            raise ReplicationError("Failed to import image s3://%s/%s: image %s of the same snapshot time is already in the catalog as %s; "
                                   "remove it first with state=absent" % (catalog.bucket, key, image["name"], clash["key"]), key=key)
        manifest["images"] = [e for e in manifest["images"] if e["key"] != key] + [image]
    previous, pruned = plan_import(manifest, image, keep_last, keep_days, now)
    changed = _sorted(manifest["images"]) != _sorted(before["images"]) or manifest["latest"] != before["latest"]
    orphaned = []
    if changed and not check_mode:
        catalog.save(manifest)  # first: if it fails, the previous catalog and every object it lists are still there
        orphaned = catalog.delete_unlisted(pruned)
    return _result(manifest, image, previous, pruned, changed, orphaned)


def plan_remove(manifest, name, server, force=False, promote=True, candidates=None):
    """Drop image ``name`` (``<server>-latest`` means the latest) from ``manifest`` in place; ``(entry, previous latest)``.

    ``entry`` is None when there is no such image. The latest goes only with ``force``; then the newest image left
    becomes the latest (``promote``), or none (a library where the latest is an image of its own name).
    ``candidates`` (default: the manifest's images) is where ``name`` is looked up: also images not in use yet.
    The one removal rule for every target, as ``plan_import`` is the one rotation rule.
    """
    if name == _naming.latest_name(server):
        name = manifest["latest"]
    entry = _by_name({"images": manifest["images"] if candidates is None else candidates}, name) if name else None
    if entry is None:
        return None, None
    previous = None
    if manifest["latest"] == entry["name"]:
        if not force:
            raise ReplicationError("Failed to remove image %s: it is the latest image of server %s; set force=true to remove it anyway"
                                   % (entry["name"], server), name=entry["name"])
        previous = entry
    manifest["images"] = [e for e in manifest["images"] if e is not entry]
    if previous is not None:
        rest = _sorted(manifest["images"])
        manifest["latest"] = rest[-1]["name"] if rest and promote else None
    return entry, previous


def remove_image(catalog, name, force=False, check_mode=False):
    """Remove image ``name`` (``<server>-latest`` means the latest) and its object; the latest only with ``force``."""
    manifest = catalog.load()
    entry, previous = plan_remove(manifest, name, catalog.server, force)
    if entry is None:
        return _result(manifest, None, None, [], False)
    orphaned = []
    if not check_mode:
        catalog.save(manifest)  # first, as in import_image
        orphaned = catalog.delete_unlisted([entry])
    return _result(manifest, entry, previous, [], True, orphaned)


def info(catalog):
    manifest = catalog.load()
    latest = _by_name(manifest, manifest["latest"]) if manifest["latest"] else None
    return dict(changed=False, images=[public(e) for e in manifest["images"]], latest=public(latest), orphans=catalog.orphans(manifest))
