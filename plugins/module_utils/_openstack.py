# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target ``openstack``: the image library (Glance) of one OpenStack region, reached through openstacksdk and clouds.yaml.

Glance images carry properties, so the collection's mark on an image is there: ``vmimage_created_by``, ``vmimage_server``,
``vmimage_snapshot_time``, ``vmimage_sha256``, ``vmimage_key``; an image without them is never listed, renamed or deleted.
An import streams the QCOW2 object from the bucket into a new image ``<server>-<snapshot time>`` (hashing the bytes as they
go), waits ``active``, checks Glance's ``os_hash_value`` against the hash of what was sent (a mismatch deletes the image),
then renames the previous ``<server>-latest`` to its snapshot-time name and the new image ``<server>-latest``. A failed
import leaves the previous latest untouched. Rotation and retention are ``_catalog.plan_import`` / ``plan_remove``.
"""

from __future__ import annotations

import hashlib

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _cos, _naming, _openstack_cloud, _provider_options, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


OPTIONS = _provider_options.OPENSTACK
PROPERTY_PREFIX = "vmimage_"
EXTRA_FIELDS = ("glance_name", "os_hash_algo", "os_hash_value", "import_method", "import_note")
CHUNK = 1024 * 1024


class HashingReader:
    """A file-like view of the object's body that hashes every byte sent (sha256 for the bucket's record, sha512 and md5 for
    Glance's ``os_hash_value`` and ``checksum``)."""

    def __init__(self, body):
        self.body = body
        self.sent = 0
        self.digests = {name: hashlib.new(name) for name in ("sha256", "sha512", "md5")}

    def read(self, size=CHUNK):
        data = self.body.read(CHUNK if size is None or size < 0 else size)
        for digest in self.digests.values():
            digest.update(data)
        self.sent += len(data)
        return data

    def __iter__(self):
        while True:
            data = self.read(CHUNK)
            if not data:
                return
            yield data

    def hexdigest(self, name):
        return self.digests[name].hexdigest() if name in self.digests else None


class Target(_providers.Target):
    name = "openstack"

    def __init__(self, params):
        super().__init__(params)
        self.os = params.get("openstack") or {}
        self.server = _naming.check_server(params["server"])
        self._conn = None

    # --- the cloud ------------------------------------------------------------------------------------------------------------
    @property
    def where(self):
        return _openstack_cloud.where(self.os, "Glance")

    @property
    def conn(self):
        if self._conn is None:
            self._conn = _openstack_cloud.connect(self.os, "target")
        return self._conn

    def _fail(self, action, exc):
        return _openstack_cloud.fail(action, self.where, exc)

    # --- the images of this server --------------------------------------------------------------------------------------------
    def _entries(self):
        """Images this collection made for this server, oldest first, each named by its snapshot time (``glance_name`` is its name there)."""
        out = []
        url = "/images?limit=200&%sserver=%s" % (PROPERTY_PREFIX, self.server)
        images = []
        while url:  # Glance pages with a "next" link; the server's name is a filter on the collection's property
            page = self._request("list images of server %s" % self.server, "get", url)
            images.extend(page.get("images") or [])
            url = page.get("next")
        for image in images:
            props = image
            if props.get(PROPERTY_PREFIX + "created_by") != _naming.CREATED_BY or props.get(PROPERTY_PREFIX + "server") != self.server:
                continue
            try:
                when = _naming.format_time(props.get(PROPERTY_PREFIX + "snapshot_time"))
            except (TypeError, ValueError):
                continue
            out.append(self._entry(props, when))
        return sorted(out, key=lambda e: (e["snapshot_time"], e["name"]))

    def _entry(self, props, when):
        return {"name": _naming.image_name(self.server, when), "glance_name": props.get("name"), "id": props.get("id"),
                "key": props.get(PROPERTY_PREFIX + "key"), "format": props.get("disk_format"), "size": props.get("size"),
                "sha256": props.get(PROPERTY_PREFIX + "sha256"), "snapshot_time": when,
                "source_fingerprint": props.get(PROPERTY_PREFIX + "source_fingerprint"), "status": props.get("status"),
                "guest_sha256": props.get(PROPERTY_PREFIX + "guest_sha256"),
                "os_hash_algo": props.get("os_hash_algo"), "os_hash_value": props.get("os_hash_value"),
                "latest": props.get("name") == _naming.latest_name(self.server)}

    @staticmethod
    def _manifest(entries):
        usable = [e for e in entries if e["status"] == "active"]
        return {"images": usable, "latest": next((e["name"] for e in usable if e["latest"]), None)}

    @staticmethod
    def _result(manifest, entries, image, previous, pruned, changed, orphaned=()):
        return _catalog.target_import_result(manifest, entries, image, previous, pruned, changed, orphaned, ("active",), EXTRA_FIELDS)

    # --- verbs ----------------------------------------------------------------------------------------------------------------
    def info(self):
        entries = self._entries()
        result = self._result(self._manifest(entries), entries, None, None, [], False)
        return {k: result[k] for k in ("changed", "images", "latest", "orphans")}

    def import_image(self, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None,
                     check_mode=False, **extra):
        p = self.params
        if not p.get("cos") or not p.get("bucket"):
            raise ReplicationError("Failed to import image %s of server %s: set cos and bucket (where the image object is)" % (key, self.server))
        catalog = _catalog.open_catalog(p["cos"], p["bucket"], p.get("prefix") or "", self.server, "import image")
        image = catalog.describe(key, sha256, snapshot_time, source_fingerprint)
        catalog.check_format(key, "qcow2", image["size"])
        image.update(id=None, status="absent", glance_name=image["name"], latest=False, os_hash_algo=None, os_hash_value=None)
        entries = self._entries()
        manifest = self._manifest(entries)
        old_latest = next((e for e in manifest["images"] if e["latest"]), None)
        current = next((e for e in manifest["images"] if e["sha256"] == image["sha256"] or e["name"] == image["name"]), None)
        if current is not None:  # this snapshot is imported already; a run cut off before its renames ends them
            previous, pruned = _catalog.plan_import(manifest, current, keep_last, keep_days)
            rotate = manifest["latest"] == current["name"] and not current["latest"]
            orphaned = []
            if not check_mode:
                if rotate:
                    self._rotate(current, old_latest)
                orphaned = self._delete(pruned)
            return self._result(manifest, entries, current, previous if rotate else None, pruned, bool(pruned) or rotate, orphaned)
        image.update(catalog.guest_digest(key, extra.get("verify_digest", True), check_mode))
        planned = {"images": manifest["images"] + [image], "latest": manifest["latest"]}
        previous, pruned = _catalog.plan_import(planned, image, keep_last, keep_days)
        if check_mode:
            return self._result(planned, entries, image, previous, pruned, True)
        self._delete([e for e in entries if e["name"] == image["name"]], strict=True)  # a failed import of the same snapshot
        made = self._import(catalog, key, image, extra)
        image.update(id=made["id"], status=made["status"], size=made.get("size") or image["size"], os_hash_algo=made.get("os_hash_algo"),
                     os_hash_value=made.get("os_hash_value"), import_method=made["import_method"], import_note=made["import_note"])
        if planned["latest"] == image["name"]:
            self._rotate(image, old_latest)
        orphaned = self._delete(pruned)
        return self._result(planned, entries, image, previous, pruned, True, orphaned)

    def remove_image(self, name, force=False, check_mode=False):
        entries = self._entries()
        manifest = self._manifest(entries)
        # The latest is the image named <server>-latest: removing it leaves none until the next import.
        entry, previous = _catalog.plan_remove(manifest, name, self.server, force, promote=False, candidates=entries)
        if entry is None:
            return self._result(manifest, entries, None, None, [], False)
        orphaned = [] if check_mode else self._delete([entry])
        return self._result(manifest, entries, entry, previous, [], True, orphaned)

    # --- helpers --------------------------------------------------------------------------------------------------------------
    def _properties(self, image, extra):
        """Glance properties of a new image: the source's ``os_*`` ones (openstack.properties, or the import's extra), then the collection's state."""
        props = {}
        for source in (extra.get("properties") or {}, self.os.get("properties") or {}):
            props.update({str(k): str(v) for k, v in source.items() if not str(k).startswith(PROPERTY_PREFIX)})
        props.update({PROPERTY_PREFIX + "created_by": _naming.CREATED_BY, PROPERTY_PREFIX + "server": self.server,
                      PROPERTY_PREFIX + "snapshot_time": image["snapshot_time"], PROPERTY_PREFIX + "sha256": image["sha256"],
                      PROPERTY_PREFIX + "key": image["key"]})
        for field in ("source_fingerprint", "guest_sha256"):
            if image.get(field):
                props[PROPERTY_PREFIX + field] = image[field]
        return props

    def _import(self, catalog, key, image, extra):
        action = "import image %s from s3://%s/%s" % (image["name"], catalog.bucket, key)
        body = {"name": image["name"], "disk_format": "qcow2", "container_format": "bare", "visibility": self.os.get("visibility") or "private"}
        for option in ("min_disk", "min_ram"):
            value = extra.get(option) if extra.get(option) is not None else self.os.get(option)
            if value is not None:
                body[option] = int(value)
        body.update(self._properties(image, extra))
        made = self._request(action, "post", "/images", json=body)
        try:
            method, note = self._web_download(catalog, key, made["id"], action) if self.os.get("import_method") == "web-download" \
                else ("upload", None)
            if method == "upload":
                reader = self._upload(catalog, key, made["id"], action)
            found = self._wait_active(action, made["id"]) if self.os.get("wait", True) or method != "upload" else self._get(action, made["id"])
            if method != "upload":  # Glance fetched the object itself: what it stored is checked against the object, read here
                reader = self._read_object(catalog, key)
            self._check_hash(action, key, image, reader, found)
            found.update(import_method=method, import_note=note)
            return found
        except Exception:  # a broken read of the object too: an image not checked against it is never left behind
            self._delete([{"name": image["name"], "id": made["id"]}])  # a failed image is removed; the previous latest was not touched
            raise

    @staticmethod
    def _open_object(catalog, key):
        """The object's body, wrapped in a reader that hashes what passes."""
        try:
            return HashingReader(catalog.client.get_object(Bucket=catalog.bucket, Key=key)["Body"])
        except (_cos.ClientError, _cos.BotoCoreError) as exc:
            raise catalog._fail(exc, "read image", key) from None  # pylint: disable=protected-access

    def _read_object(self, catalog, key):
        reader = self._open_object(catalog, key)
        stream = reader.body
        try:
            for _unused in reader:
                pass
        except (_cos.BotoCoreError, _cos.BrokenRead, OSError) as exc:
            raise ReplicationError("Failed to read s3://%s/%s to check what Glance stored: %s; the image was deleted, run the import again"
                                   % (catalog.bucket, key, exc), key=key) from None
        finally:
            stream.close()
        return reader

    def _upload(self, catalog, key, image_id, action):
        reader = self._open_object(catalog, key)
        stream = reader.body
        try:
            self._request(action, "put", "/images/%s/file" % image_id, data=iter(reader), headers={"Content-Type": "application/octet-stream"})
        finally:
            stream.close()
        return reader

    def _web_download(self, catalog, key, image_id, action):
        """Glance's interoperable import fetches the object from a presigned URL: ``("web-download", None)``; where Glance does
        not offer it or refuses the URL (its import filtering), ``("upload", why)`` and the caller uploads. The URL is a
        credential for its lifetime (openstack.timeout): it is never put in a message."""
        offered = (self._request(action, "get", "/info/import").get("import-methods") or {}).get("value") or []
        if "web-download" not in offered:
            return "upload", "%s does not offer web-download (its import methods: %s); the image was uploaded" % (self.where, ", ".join(offered))
        url = catalog.client.generate_presigned_url("get_object", Params={"Bucket": catalog.bucket, "Key": key},
                                                    ExpiresIn=int(self.os.get("timeout") or 1800))
        try:
            response = self.conn.image.post("/images/%s/import" % image_id, json={"method": {"name": "web-download", "uri": url}}, raise_exc=False)
        except _openstack_cloud.SDK_ERRORS as exc:
            raise self._fail(action, exc) from None
        if response.status_code in (400, 403, 409):  # Glance's words would carry the URL: only the status is kept
            return "upload", "%s refused web-download of the object (HTTP %d, its import filtering); the image was uploaded" % (
                self.where, response.status_code)
        if response.status_code >= 300:
            raise ReplicationError("Failed to %s in %s: web-download answered HTTP %d; see Glance's log" % (action, self.where, response.status_code))
        return "web-download", None

    def _request(self, action, method, url, **kwargs):
        """A call to the Glance API; an answer of 4xx/5xx fails with Glance's words (it names the refused format, the quota ...)."""
        try:
            response = getattr(self.conn.image, method)(url, raise_exc=False, **kwargs)
        except _openstack_cloud.SDK_ERRORS as exc:
            raise self._fail(action, exc) from None
        if response.status_code >= 400:
            text = " ".join((response.text or "").split())[:400]
            hint = {400: "Glance refused the image; check its disk_formats / container_formats (it must accept qcow2, bare)",
                    401: "check the credentials", 403: "the user may not create images here, or a quota is reached",
                    409: "the image is not in a state that accepts this", 413: "the image is larger than Glance's image_size_cap or the quota"}
            todo = hint.get(response.status_code, "see Glance's log")
            raise ReplicationError("Failed to %s in %s: HTTP %d %s; %s" % (action, self.where, response.status_code, text, todo),
                                   code=response.status_code)
        return response.json() if response.content else {}

    def _get(self, action, image_id):
        return self._request(action, "get", "/images/%s" % image_id)

    def _wait_active(self, action, image_id):
        def probe():
            found = self._get(action, image_id)
            if found.get("os_glance_failed_import"):  # an interoperable import that failed leaves the image queued
                raise ReplicationError("Failed to %s in %s: Glance's import into store %s failed; see Glance's log"
                                       % (action, self.where, found["os_glance_failed_import"]))
            # An interoperable import is over when no store is still being imported to and the hash is recorded.
            hashed = bool(found.get("os_hash_value") or found.get("checksum"))
            return found.get("status") == "active" and not found.get("os_glance_importing_to_stores") and hashed, found
        return _openstack_cloud.wait(probe, self.os, self.params, "image %s" % image_id, action, self.where, ("killed", "deleted", "deactivated"))

    def _check_hash(self, action, key, image, reader, found):
        sent = reader.hexdigest("sha256")
        if sent != image["sha256"]:
            raise ReplicationError("Failed to %s: the bytes read from the bucket hash to sha256 %s, not the object's recorded %s; the image was "
                                   "deleted, upload s3://%s/%s again" % (action, sent, image["sha256"], self.params["bucket"], key),
                                   sha256=sent, expected=image["sha256"])
        algo, value = found.get("os_hash_algo"), found.get("os_hash_value")
        expected = reader.hexdigest(algo) if algo else None
        if algo and expected is None:  # an algorithm the reader does not compute: fall back to Glance's md5 checksum
            algo, value, expected = "md5", found.get("checksum"), reader.hexdigest("md5")
        if not value or value != expected or found.get("size") not in (None, reader.sent):
            raise ReplicationError("Failed to %s: Glance stored %s bytes with %s %s, but %d bytes with %s %s were sent; the image was deleted, "
                                   "run the import again" % (action, found.get("size"), algo, value, reader.sent, algo, expected),
                                   os_hash_algo=algo, os_hash_value=value, sent=expected)

    def _rotate(self, image, old_latest):
        """The previous ``<server>-latest`` takes its snapshot-time name, then ``image`` becomes ``<server>-latest``."""
        if old_latest is not None and old_latest is not image:
            self._rename(old_latest, old_latest["name"])
            old_latest.update(glance_name=old_latest["name"], latest=False)
        self._rename(image, _naming.latest_name(self.server))
        image.update(glance_name=_naming.latest_name(self.server), latest=True)

    def _rename(self, entry, new_name):
        action = "rename image %s to %s" % (entry["glance_name"], new_name)
        self._request(action, "patch", "/images/%s" % entry["id"], json=[{"op": "replace", "path": "/name", "value": new_name}],
                      headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})

    def _delete(self, entries, strict=False):
        def delete_one(entry):
            self._request("delete image %s" % entry["name"], "delete", "/images/%s" % entry["id"])
        return _catalog.delete_target_images(entries, delete_one, strict)
