# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Image-backed Nova servers for the openstack provider: their root disk is no Cinder volume but a disk of the hypervisor,
so their snapshot is Nova's ``createImage`` (a Glance image in the server's region; Nova uploads the disk, or with a Ceph
backend clones it into the images pool) and the conversion host reads a Cinder volume made from that image.

The root disk stands for a volume in the provider's answers with the id ``server-root:<server id>``. The snapshot image
carries the collection's mark in its properties (``created-by``, ``source-server``, ``snapshot-time``; Nova adds
``image_type=snapshot`` and ``instance_uuid``); an image without the mark is never deleted.
"""

from __future__ import annotations

from ansible_collections.vmimage.replication.plugins.module_utils import _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

ROOT = "server-root:"
GIB = 1024 ** 3


def root_volume(server):
    """The root disk of an image-backed server, as a volume of the provider's answers."""
    return {"id": ROOT + server.id, "name": "%s root disk" % server.name, "size": ((server.flavor or {}).get("disk") or 0) * GIB,
            "profile": "nova-local", "zone": server.availability_zone, "status": None, "bootable": True}


def server_of(volume):
    return volume[len(ROOT):] if volume and volume.startswith(ROOT) else None


def public(image):
    props = image.properties or {}
    created = (image.created_at or "")[:19] + "Z" if image.created_at else None
    instance = getattr(image, "instance_uuid", None) or props.get("instance_uuid")
    volume = props.get("source-volume") or (ROOT + instance if instance else None)
    return {"name": image.name, "id": image.id, "volume": volume, "direct": props.get("direct"),
            "server": props.get("source-server"), "created": created, "size": image.size, "format": image.disk_format, "fingerprint": None,
            "created_by": props.get("created-by"), "status": image.status, "os": getattr(image, "os_distro", None), "image": True,
            "snapshot_time": _naming.format_time(props["snapshot-time"]) if props.get("snapshot-time") else created}


def ours(image):
    return (image.properties or {}).get("created-by") == _naming.CREATED_BY


class ServerImages:
    """The snapshot images of image-backed servers, for ``_openstack_source.Source`` (``source``: its call and wait)."""

    def __init__(self, source):
        self.source = source

    def list(self, server_id=None, name=None, volume_id=None):
        """Snapshot images (property ``image_type=snapshot``): of image-backed server ``server_id``, or direct snapshots of
        volume ``volume_id`` (``_openstack_rbd``). openstacksdk sends Glance only the filters it knows (``name``): the rest
        are applied here."""
        conn = self.source.conn
        found = self.source.call("list snapshot images", "Glance", lambda: list(conn.image.images(**({"name": name} if name else {}))))

        def wanted(image):
            props = image.properties or {}
            return ((props.get("image_type") or getattr(image, "image_type", None)) == "snapshot"
                    and (not server_id or (getattr(image, "instance_uuid", None) or props.get("instance_uuid")) == server_id)
                    and (not volume_id or props.get("source-volume") == volume_id))
        return sorted((i for i in found if wanted(i)), key=lambda i: (i.created_at or "", i.name or ""))

    def create(self, server_id, name, metadata, action):
        conn = self.source.conn
        image = self.source.call(action, "Nova", conn.compute.create_server_image, server_id, name, metadata=metadata)
        try:
            return self.wait(image, action)
        except ReplicationError as failure:
            try:  # a failed or stuck snapshot image of this run is not left behind
                self.delete(image, action + " (and remove the image it made, %s: remove it by hand)" % name)
            except ReplicationError as cleanup:
                failure.extend_msg(cleanup.msg)
            raise

    def wait(self, image, action):
        conn = self.source.conn

        def probe():
            found = self.source.call(action, "Glance", conn.image.get_image, image.id)
            return found.status == "active", {"status": found.status, "image": found}
        return self.source.wait(probe, "snapshot image %s" % image.name, action, ("killed", "deleted", "deactivated"))["image"]

    def delete(self, image, action):
        conn = self.source.conn
        self.source.call(action, "Glance", conn.image.delete_image, image, ignore_missing=True)

    @staticmethod
    def refuse_restore(image, action):
        volume = (image.properties or {}).get("source-volume")
        if volume:
            raise ReplicationError("Failed to %s: it is a direct snapshot of volume %s (a Glance image in Ceph), which Cinder cannot revert "
                                   "to; attach a volume made from it, or take Cinder snapshots (without openstack.direct_snapshot) to "
                                   "restore in place" % (action, volume))
        raise ReplicationError("Failed to %s: it is a Glance image of an image-backed server (%s), which has no volume to revert; rebuild "
                               "the server from it (openstack server rebuild --image %s) or attach a volume made from it"
                               % (action, server_of(public(image)["volume"]) or "unknown", image.id))

    def volume_spec(self, image):
        """What Cinder needs to make the conversion host's volume from the image: at least the image's size, whole GB."""
        size = max(-(-(image.size or 0) // GIB), image.min_disk or 0, 1)
        return {"imageRef": image.id, "size": size}
