# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Glance -> bucket: an image of one OpenStack region written as the collection's object, so that every target
(IBM VPC, PowerVS, another Glance, the bucket catalog) imports it like one the pipeline uploaded.

The image is streamed from Glance into a multipart upload, one part in memory at a time, hashing as it goes (sha256
for the object's record, and Glance's own ``os_hash_algo``). Before the object gets its metadata - and so before any
importer would take it - Glance's ``os_hash_value`` and size must equal what was read, and for a QCOW2 image the guest
digest recomputed from the stored object must equal the ``vmimage_guest_sha256`` the image records (when it records
one). Any mismatch deletes the object. The object's key is the collection's (``<prefix><server>/<server>-<time>.<fmt>``,
the time being the image's ``vmimage_snapshot_time``, else its creation); it records the Glance image's id, so that a
second export of the same image changes nothing.
"""

from __future__ import annotations

import datetime
import hashlib

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _digest, _multipart, _naming, _openstack_cloud
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

FORMATS = ("qcow2", "raw")
CHUNK = 1024 * 1024


UNFINISHED_AFTER = 3600  # seconds: an object without its record older than this is an export that died, not one still checking


def _stale(found):
    when = found.get("last_modified")
    if not when:
        return True
    age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(when.replace("Z", "+00:00"))
    return age.total_seconds() > UNFINISHED_AFTER


class Export:
    def __init__(self, params):
        self.p = params
        self.os = params.get("openstack") or {}
        self.server = _naming.check_server(params["server"])
        self.where = _openstack_cloud.where(self.os, "Glance")

    def _image(self, conn):
        wanted = self.p.get("image") or _naming.latest_name(self.server)
        action = "export image %s" % wanted
        try:
            found = list(conn.image.images(name=wanted)) or [i for i in [conn.image.find_image(wanted, ignore_missing=True)] if i]
        except _openstack_cloud.SDK_ERRORS as exc:
            raise _openstack_cloud.fail(action, self.where, exc) from None
        if not found:
            raise ReplicationError("Failed to %s: no image of that name or id in %s; check image and openstack.region_name" % (action, self.where))
        if len(found) > 1:
            raise ReplicationError("Failed to %s: %d images have that name (%s); give the image's id" % (action, len(found), ", ".join(i.id for i in found)))
        image = found[0]
        if image.status != "active":
            raise ReplicationError("Failed to %s: the image is %s, not active; wait for it or choose another" % (action, image.status))
        if image.disk_format not in FORMATS:
            raise ReplicationError("Failed to %s: its disk_format is %s; only %s images can be exported for import elsewhere"
                                   % (action, image.disk_format, " and ".join(FORMATS)))
        return image

    def run(self, check_mode=False):
        conn = _openstack_cloud.connect(self.os, "source")
        image = self._image(conn)
        props = image.properties or {}
        when = _naming.format_time(props.get("vmimage_snapshot_time") or image.created_at)
        key = _naming.object_key(self.p.get("prefix") or "", self.server, when, image.disk_format)
        result = {"changed": False, "key": key, "bucket": self.p["bucket"], "format": image.disk_format, "snapshot_time": when,
                  "image": {"id": image.id, "name": image.name, "os_hash_algo": image.hash_algo, "os_hash_value": image.hash_value},
                  "size": image.size, "sha256": None, "guest_sha256": None}
        action = "export image %s to s3://%s/%s" % (image.name, self.p["bucket"], key)
        with _cos.naming_errors(action, self.p["cos"], self.p["bucket"], key):
            client = _cos.connect(self.p["cos"])
            existing = _cos.head(client, self.p["bucket"], key)
            if existing is not None and existing["metadata"].get("created-by") == _naming.CREATED_BY and not existing["metadata"].get("sha256") \
                    and _stale(existing):
                existing = None  # an export that died before its object got its metadata (long enough ago): done again
            if existing is not None:
                meta = existing["metadata"]
                if meta.get("source-image") != image.id or not meta.get("sha256"):
                    raise ReplicationError("Failed to %s: another object is at that key (of image %s); remove it or choose another prefix"
                                           % (action, meta.get("source-image") or "unknown"), key=key)
                result.update(sha256=meta["sha256"], guest_sha256=meta.get(_digest.METADATA_KEY), size=existing["size"])
                return result
            result["changed"] = True
            if check_mode:
                return result
            sent = self._stream(conn, client, image, key, action)
            try:
                result.update(self._verify(client, image, key, sent, action))
            except Exception:  # a failed check, or a read of the object that broke: no object without a verified record
                _cos.delete_object(client, self.p["bucket"], key)
                raise
            metadata = {"format": image.disk_format, "snapshot-time": _naming.stamp(when), "source-server": self.server,
                        "source-image": image.id, "size": str(sent["size"])}
            if result["guest_sha256"]:
                metadata[_digest.METADATA_KEY] = result["guest_sha256"]
            _cos.set_metadata(client, self.p["bucket"], key, sent["size"], _cos.object_metadata(metadata, sent["sha256"]))
        result.update(sha256=sent["sha256"], size=sent["size"])
        return result

    def _stream(self, conn, client, image, key, action):
        """Glance's bytes into a multipart upload, one part in memory at a time: ``{size, sha256, <algo>...}``."""
        bucket = self.p["bucket"]
        part_size = _multipart.plan_part_size(image.size or 0, self.p.get("part_size") or 64 * CHUNK)
        digests = {name: hashlib.new(name) for name in ("sha256", "sha512", "md5")}
        upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"created-by": _naming.CREATED_BY})["UploadId"]
        counter, parts, buffer, size = _multipart.Counter(None, 0), [], bytearray(), 0
        try:
            try:
                response = conn.image.download_image(image, stream=True)
            except _openstack_cloud.SDK_ERRORS as exc:
                raise _openstack_cloud.fail(action, self.where, exc) from None
            for chunk in response.iter_content(CHUNK):
                for digest in digests.values():
                    digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    parts.append(_multipart.send_bytes(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer[:part_size]), counter))
                    del buffer[:part_size]
            if buffer or not parts:
                parts.append(_multipart.send_bytes(client, bucket, key, upload_id, len(parts) + 1, bytes(buffer), counter))
            client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": [{"PartNumber": n, "ETag": '"%s"' % e} for n, e, _md5 in parts]})
        except BaseException:
            _cos.abort_upload(client, bucket, key, upload_id)
            raise
        return dict({name: digest.hexdigest() for name, digest in digests.items()}, size=size)

    def _verify(self, client, image, key, sent, action):
        """Glance's record against what was read, then the guest digest of the stored object against the image's record."""
        algo, value = image.hash_algo, image.hash_value
        if algo not in sent:
            algo, value = "md5", image.checksum
        if (value and value != sent[algo]) or (image.size is not None and image.size != sent["size"]):
            raise ReplicationError("Failed to %s: Glance records %s bytes with %s %s, but %d bytes with %s %s were read; the image in Glance "
                                   "is damaged or changed while read; the object was deleted"
                                   % (action, image.size, algo, value, sent["size"], algo, sent[algo]), os_hash_algo=algo)
        if image.disk_format != "qcow2":
            return {"guest_sha256": None}
        try:
            found = _digest.digest_qcow2(_digest.object_reader(client, self.p["bucket"], key, sent["size"]))
        except (_digest.Qcow2Error, ValueError) as exc:
            raise ReplicationError("Failed to %s: the image is not a QCOW2 that reads back whole (%s); the object was deleted" % (action, exc)) from None
        recorded = (image.properties or {}).get("vmimage_guest_sha256")
        if recorded and recorded.lower() != found:
            raise ReplicationError("Failed to %s: its guest content digest is %s, but the image records %s; the object was deleted"
                                   % (action, found, recorded), guest_sha256=found)
        return {"guest_sha256": found}
