# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Provider ``openstack``: a volume-backed Nova server, its Cinder volumes and snapshots (openstacksdk, clouds.yaml).

A server is found by its exact name (Nova filters names as regular expressions, so the match is made here; two
servers of one name are refused). A snapshot is a Cinder snapshot of the boot volume, taken with ``force`` (the guest
keeps running; freeze it with ``consistency`` for a crash-consistent one) and marked in its metadata
(``created-by``, ``source-server``, ``snapshot-time``). ``volume_attach`` makes a volume ``<snapshot>-conv`` from the
snapshot, attaches it to the conversion host's server through Nova and finds it by its serial, the volume id
(``<by_id_dir>/virtio-<first 20 characters>``), never by Nova's guess of the device name.

Restore is Cinder's revert (microversion 3.40): in place, to the volume's *latest* snapshot, and only while the volume is
detached (``available``); anything else is refused with what to do. A revert is recorded in the snapshot's metadata
(``reverted-volume``: volume id and its ``updated_at`` after the revert), so restoring again before the volume changed
state is no change.
"""

from __future__ import annotations

import datetime
import os
import re

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _openstack_cloud, _provider_options, _providers
from ansible_collections.vmimage.replication.plugins.module_utils import _openstack_rbd
from ansible_collections.vmimage.replication.plugins.module_utils import _openstack_server_image as server_image
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

OPTIONS = _provider_options.OPENSTACK
GIB = 1024 ** 3
ROOT_DEVICES = ("/dev/vda", "/dev/sda", "/dev/xvda", "/dev/hda")
REVERTED = "reverted-volume"
IMAGE_PROPERTY_PREFIXES = ("os_", "hw_")  # what describes the guest to the target cloud (os_distro, hw_disk_bus...)


def conv_volume_name(snapshot_name):
    return "%s-conv" % snapshot_name


def _iso(value):
    return (value or "")[:19] + "Z" if value else None


def ours(resource):
    if _is_image(resource):
        return server_image.ours(resource)
    return (resource.metadata or {}).get("created-by") == _naming.CREATED_BY


def _is_image(resource):
    """A snapshot of an image-backed server is a Glance image; of a volume, a Cinder snapshot."""
    return type(resource).__name__ == "Image"


class Source(_providers.Source):
    name = "openstack"

    def __init__(self, params):
        super().__init__(params)
        self.os = params.get("openstack") or {}
        self._conn = None
        self.images = server_image.ServerImages(self)

    @property
    def conn(self):
        if self._conn is None:
            self._conn = _openstack_cloud.connect(self.os, "provider")
        return self._conn

    def call(self, action, service, function, *args, **kwargs):
        """``function(*args, **kwargs)`` with SDK errors as ReplicationError naming the service and what to fix."""
        try:
            return function(*args, **kwargs)
        except _openstack_cloud.SDK_ERRORS as exc:
            endpoint = {"Cinder": "block-storage", "Glance": "image"}.get(service, "compute")
            raise _openstack_cloud.fail(action, _openstack_cloud.where(self.os, service), exc, service, endpoint) from None

    def wait(self, probe, what, action, failure_states=("error",)):
        return _openstack_cloud.wait(probe, self.os, self.params, what, action, _openstack_cloud.where(self.os, "Cinder"), failure_states)

    # --- the server ---------------------------------------------------------------------------------------------------------
    def find_server(self, name, action="find server"):
        found = [s for s in self.call("%s %s" % (action, name), "Nova", lambda: list(self.conn.compute.servers(name="^%s$" % re.escape(name))))
                 if s.name == name]
        if not found and re.match(r"^[0-9a-f-]{36}$", name):
            found = [s for s in [self.call(action, "Nova", self.conn.compute.find_server, name, ignore_missing=True)] if s is not None]
        if not found:
            raise ReplicationError("Failed to %s %s: no server of that name in %s; check the name, openstack.region_name and the project"
                                   % (action, name, _openstack_cloud.where(self.os, "Nova")), server=name)
        if len(found) > 1:
            raise ReplicationError("Failed to %s %s: %d servers have that name (%s); rename all but one, names must be unique for replication"
                                   % (action, name, len(found), ", ".join(sorted(s.id for s in found))), server=name)
        return found[0]

    def _volume(self, volume_id, action):
        vol = self.call(action, "Cinder", self.conn.block_storage.get_volume, volume_id)
        return {"id": vol.id, "name": vol.name, "size": (vol.size or 0) * GIB, "profile": vol.volume_type, "zone": vol.availability_zone,
                "status": vol.status, "bootable": str(vol.is_bootable).lower() == "true", "image_metadata": vol.volume_image_metadata or {}}

    def server_info(self, server):
        action = "find server"
        found = self.find_server(server)
        attachments = self.call("%s %s" % (action, server), "Nova", lambda: list(self.conn.compute.volume_attachments(found)))
        volumes = [dict(self._volume(a.volume_id, action), device=a.device) for a in sorted(attachments, key=lambda a: a.device or "")]
        boot = next((v for v in volumes if v["device"] in ROOT_DEVICES), None)
        if boot is None and not (found.image or {}).get("id"):  # no root device name known: the bootable volume
            boot = next((v for v in volumes if v["bootable"]), None)
        if boot is None and (found.image or {}).get("id"):  # image-backed: the root disk is the hypervisor's, snapshotted by createImage
            boot = server_image.root_volume(found)
            snaps = [server_image.public(i) for i in self.images.list(server_id=found.id) if server_image.ours(i)]
        elif boot is None:
            raise ReplicationError("Failed to find server %s: server %s has neither a root volume nor an image" % (server, found.id), server=server)
        else:
            snaps = [self.public_snapshot(s) for s in self._snapshots(volume_id=boot["id"])]
            snaps = sorted(snaps + [server_image.public(i) for i in self.images.list(volume_id=boot["id"]) if server_image.ours(i)],
                           key=lambda s: (s["created"] or "", s["name"] or ""))
        return {"name": server, "id": found.id, "zone": found.availability_zone, "profile": (found.flavor or {}).get("original_name"),
                "os": None, "boot_volume": boot, "volumes": [boot] + [v for v in volumes if v is not boot], "status": found.status,
                "image_properties": self._image_properties(found, boot),
                "latest_snapshot": snaps[-1] if snaps else None}

    def _image_properties(self, server, boot):
        """The ``os_*`` / ``hw_*`` properties of the image the server came from (for the target's image): Cinder keeps them
        on a volume made from an image (``volume_image_metadata``); an image-backed server's are its base image's."""
        if server_image.server_of(boot["id"]):
            try:
                props = self.conn.image.get_image(server.image["id"]).properties or {}
            except _openstack_cloud.SDK_ERRORS:  # the base image may be gone: nothing to copy
                props = {}
        else:
            props = boot.get("image_metadata") or {}
        return {k: str(v) for k, v in props.items() if k.startswith(IMAGE_PROPERTY_PREFIXES) and not k.startswith(("os_hash", "os_glance"))}

    # --- snapshots ----------------------------------------------------------------------------------------------------------
    def _snapshots(self, **filters):
        found = self.call("list snapshots", "Cinder", lambda: list(self.conn.block_storage.snapshots(**filters)))
        return sorted(found, key=lambda s: (s.created_at or "", s.name or ""))

    @staticmethod
    def public_snapshot(snap):
        if _is_image(snap):
            return server_image.public(snap)
        meta = snap.metadata or {}
        created = _iso(snap.created_at)
        return {"name": snap.name, "id": snap.id, "volume": snap.volume_id, "server": meta.get("source-server"), "created": created,
                "size": (snap.size or 0) * GIB, "format": "raw", "fingerprint": None, "created_by": meta.get("created-by"),
                "status": snap.status, "os": None, "direct": None,
                "snapshot_time": _naming.format_time(meta["snapshot-time"]) if meta.get("snapshot-time") else created}

    def find_snapshot(self, ident, action):
        named = self._snapshots(name=ident) or self.images.list(name=ident)
        if named:
            return named[0]
        found = self.call(action, "Cinder", self.conn.block_storage.find_snapshot, ident, ignore_missing=True) \
            if re.match(r"^[0-9a-f-]{36}$", ident) else None
        if found is None:
            raise ReplicationError("Failed to %s: no snapshot %s in %s; check the snapshot's name"
                                   % (action, ident, _openstack_cloud.where(self.os, "Cinder")), name=ident)
        return found

    def _wait_snapshot(self, snap, action):
        def probe():
            found = self.call(action, "Cinder", self.conn.block_storage.get_snapshot, snap.id)
            return found.status == "available", {"status": found.status, "snapshot": found}
        return self.wait(probe, "snapshot %s" % snap.name, action, ("error", "error_deleting"))["snapshot"]

    def snapshot_create(self, volume, server=None, name=None, check_mode=False):
        action = "snapshot volume %s" % volume
        when = _naming.format_time(datetime.datetime.now(datetime.timezone.utc))
        name = name or _naming.image_name(server or "snapshot", when)
        if server_image.server_of(volume):
            return self._image_snapshot(volume, server, name, when, check_mode)
        existing = self._snapshots(name=name) or [i for i in self.images.list(name=name) if server_image.ours(i)]
        if existing:
            if _is_image(existing[0]):  # a direct snapshot (a Glance image) of this name
                if (existing[0].properties or {}).get("source-volume") != volume:
                    raise ReplicationError("Failed to %s: snapshot image %s already exists of another volume; choose another name" % (action, name))
                return server_image.public(existing[0] if check_mode else self.images.wait(existing[0], action)), False
            if existing[0].volume_id != volume:
                raise ReplicationError("Failed to %s: snapshot %s already exists of another volume; choose another name" % (action, name))
            return self.public_snapshot(existing[0] if check_mode else self._wait_snapshot(existing[0], action)), False
        metadata = {"created-by": _naming.CREATED_BY, "snapshot-time": _naming.stamp(when)}
        if server:
            metadata["source-server"] = server
        fallback = None
        if self.os.get("direct_snapshot") and not check_mode:
            image, fallback = _openstack_rbd.Direct(self, self.os["direct_snapshot"], self.os.get("timeout") or 1800).snapshot(
                volume, name, dict(metadata, **{"source-volume": volume, "direct": "rbd", "image_type": "snapshot"}), action)
            if image is not None:
                return server_image.public(image), True
        if check_mode:
            return {"name": name, "id": None, "volume": volume, "server": server, "created": when, "size": None, "format": "raw",
                    "fingerprint": None, "created_by": _naming.CREATED_BY, "status": None, "os": None, "snapshot_time": when}, True
        snap = self.call(action, "Cinder", self.conn.block_storage.create_snapshot, volume_id=volume, name=name, force=True, metadata=metadata,
                         description="made by %s" % _naming.CREATED_BY)
        try:
            return dict(self.public_snapshot(self._wait_snapshot(snap, action)), direct_fallback=fallback), True
        except ReplicationError as failure:
            try:  # a failed or stuck snapshot of this run is not left behind
                self._delete_snapshot(snap, action + " (and remove the snapshot it made, %s: remove it by hand)" % name)
            except ReplicationError as cleanup:
                failure.extend_msg(cleanup.msg)
            raise

    def _image_snapshot(self, volume, server, name, when, check_mode):
        """createImage of an image-backed server (``volume`` is its root disk): the Glance image, waited ``active``."""
        action = "snapshot the root disk of server %s" % (server or server_image.server_of(volume))
        existing = [i for i in self.images.list(name=name) if server_image.ours(i)]
        if existing:
            return server_image.public(existing[0] if check_mode else self.images.wait(existing[0], action)), False
        metadata = {"created-by": _naming.CREATED_BY, "snapshot-time": _naming.stamp(when), "source-server": server or ""}
        if check_mode:
            return {"name": name, "id": None, "volume": volume, "server": server, "created": when, "size": None, "format": None,
                    "fingerprint": None, "created_by": _naming.CREATED_BY, "status": None, "os": None, "image": True, "snapshot_time": when}, True
        return server_image.public(self.images.create(server_image.server_of(volume), name, metadata, action)), True

    def _delete_snapshot(self, snap, action):
        self.call(action, "Cinder", self.conn.block_storage.delete_snapshot, snap, ignore_missing=True)

        def probe():
            found = self.call(action, "Cinder", self.conn.block_storage.find_snapshot, snap.id, ignore_missing=True)
            return found is None, {"status": found.status if found is not None else "deleted"}
        self.wait(probe, "snapshot %s" % snap.name, action, ("error_deleting",))

    def snapshot_list(self, server=None, volume=None, name=None):
        root = server_image.server_of(volume)
        found = []
        if not root:
            filters = {k: v for k, v in (("name", name), ("volume_id", volume)) if v}
            found = [self.public_snapshot(s) for s in self._snapshots(**filters)]
        if root or not volume:
            found += [server_image.public(i) for i in self.images.list(server_id=root, name=name) if server_image.ours(i)]
        else:  # direct snapshots of the volume
            found += [server_image.public(i) for i in self.images.list(volume_id=volume, name=name) if server_image.ours(i)]
        found.sort(key=lambda s: (s["created"] or "", s["name"] or ""))
        return [s for s in found if server is None or s["server"] == server]

    def snapshot_delete(self, name, check_mode=False):
        found = self._snapshots(name=name) or self.images.list(name=name)
        if not found:
            return None, False
        if not ours(found[0]):
            raise ReplicationError("Failed to remove snapshot %s: it was not made by %s (no created-by metadata); remove it by hand if it is no "
                                   "longer needed" % (name, _naming.CREATED_BY), name=name)
        if not check_mode:
            if _is_image(found[0]):
                self.images.delete(found[0], "remove snapshot %s" % name)
            else:
                self._delete_snapshot(found[0], "remove snapshot %s" % name)
        return self.public_snapshot(found[0]), True

    def snapshot_restore(self, name, volume=None, check_mode=False):
        action = "restore snapshot %s" % name
        snap = self.find_snapshot(name, action)
        if _is_image(snap):
            self.images.refuse_restore(snap, action)
        result = self.public_snapshot(snap)
        vol = self.call(action, "Cinder", self.conn.block_storage.get_volume, volume or snap.volume_id)
        result["restored_volume"] = {"id": vol.id, "name": vol.name}
        if (snap.metadata or {}).get(REVERTED) == "%s@%s" % (vol.id, vol.updated_at):
            return result, False  # reverted to this snapshot, and the volume has not changed state since
        if vol.id != snap.volume_id:
            raise ReplicationError("Failed to %s: it is a snapshot of volume %s, not of %s; Cinder reverts a volume only to its own snapshots"
                                   % (action, snap.volume_id, vol.id))
        if vol.status != "available":
            on = ", ".join("server %s as %s" % (a.get("server_id"), a.get("device")) for a in vol.attachments or []) or "no server"
            raise ReplicationError("Failed to %s: volume %s is %s (attached to %s); Cinder reverts only a detached volume (status available): "
                                   "detach it (for a boot volume: delete or shelve-offload the server, keeping the volume) and run again"
                                   % (action, vol.id, vol.status, on), status=vol.status)
        latest = self._snapshots(volume_id=vol.id)[-1]
        if latest.id != snap.id:
            raise ReplicationError("Failed to %s: Cinder reverts a volume only to its latest snapshot, and %s is newer; remove the newer snapshots "
                                   "(snapshot state=absent) or attach a volume made from %s instead" % (action, latest.name or latest.id, name))
        if check_mode:
            return result, True
        self.call(action, "Cinder", self.conn.block_storage.revert_volume_to_snapshot, vol, snap)

        def probe():
            found = self.call(action, "Cinder", self.conn.block_storage.get_volume, vol.id)
            return found.status == "available", {"status": found.status, "volume": found}
        reverted = self.wait(probe, "volume %s" % vol.id, action, ("error", "error_restoring"))["volume"]
        self.call(action, "Cinder", self.conn.block_storage.set_snapshot_metadata, snap, **{REVERTED: "%s@%s" % (vol.id, reverted.updated_at)})
        return result, True

    # --- the volume on the conversion host ----------------------------------------------------------------------------------
    def volume_attach(self, snapshot, host, check_mode=False):
        action = "attach a volume from snapshot %s" % snapshot
        snap = self.find_snapshot(snapshot, action)
        server = self.find_server(host, action="find conversion host")
        answer = {"volume_id": None, "attachment_id": None, "device": None, "host": server.id, "snapshot": snap.name}
        existing = [v for v in self._volumes(conv_volume_name(snap.name)) if ours(v)]
        vol = existing[0] if existing else None
        elsewhere = [a.get("server_id") for a in (vol.attachments if vol is not None else None) or [] if a.get("server_id") != server.id]
        if vol is not None and (vol.metadata or {}).get("conversion-host") != server.id:
            elsewhere = elsewhere or [(vol.metadata or {}).get("conversion-host")]
        if elsewhere:  # another run's (or host's) volume: never touched here
            raise ReplicationError("Failed to %s: volume %s made from it is for server %s, not for conversion host %s; another run "
                                   "may be using it" % (action, vol.id, elsewhere[0], host), volume_id=vol.id)
        if vol is not None and vol.status == "error" and not check_mode:  # a failed earlier try of this host: made again
            self._delete_volume(vol.id, action)
            vol = None
        on_host = vol is not None and bool(vol.attachments)
        if not on_host and check_mode:
            answer["volume_id"] = vol.id if vol is not None else None
            return answer, True
        made = vol is None
        try:
            if vol is None:
                vol = self._volume_from(snap, server, action)
            elif not on_host:  # left by an earlier try: usable once Cinder has made (or attached) it
                vol = self._wait_volume(vol.id, ("available", "in-use"), action, ("error",))
                on_host = any(a.get("server_id") == server.id for a in vol.attachments or [])
            answer["volume_id"] = vol.id
            if not on_host:
                self.call(action, "Nova", self.conn.compute.create_volume_attachment, server, volume_id=vol.id)
            vol = self._wait_volume(vol.id, "in-use", action, ("error", "available", "error_attaching"))
            answer["attachment_id"] = next((a.get("attachment_id") for a in vol.attachments or [] if a.get("server_id") == server.id), None)
            if answer["attachment_id"] is None:
                raise ReplicationError("Failed to %s: volume %s is in-use but not attached to conversion host %s" % (action, vol.id, host))
            answer["device"] = self._device(vol.id, action)
        except ReplicationError as failure:
            if made and answer["volume_id"]:  # only what this call made is removed; the failure stays the one reported
                try:
                    self.volume_detach(dict(answer))
                except ReplicationError as cleanup:
                    failure.extend_msg(cleanup.msg)
            raise
        return answer, not on_host

    def _volumes(self, name):
        return self.call("list volumes %s" % name, "Cinder", lambda: list(self.conn.block_storage.volumes(name=name)))

    def _volume_from(self, snap, server, action):
        metadata = {"created-by": _naming.CREATED_BY, "source-snapshot": snap.id, "conversion-host": server.id}
        source = self.images.volume_spec(snap) if _is_image(snap) else {"snapshot_id": snap.id, "size": snap.size}
        # No availability zone: Cinder makes a volume from a snapshot in the snapshot's zone (cloned_volume_same_az), and
        # Nova's zone names need not be Cinder's; Nova attaches across zones unless the operator forbids it (cross_az_attach).
        vol = self.call(action, "Cinder", self.conn.block_storage.create_volume, name=conv_volume_name(snap.name), metadata=metadata, **source)
        try:
            return self._wait_volume(vol.id, "available", action, ("error",))
        except ReplicationError as failure:
            try:
                self._delete_volume(vol.id, action)
            except ReplicationError as cleanup:  # the wait's failure stays the one reported
                failure.extend_msg(cleanup.msg)
            raise

    def _wait_volume(self, volume_id, status, action, failure_states):
        """The volume once its status is ``status`` (or one of them)."""
        wanted = (status,) if isinstance(status, str) else status

        def probe():
            found = self.call(action, "Cinder", self.conn.block_storage.get_volume, volume_id)
            return found.status in wanted, {"status": found.status, "volume": found}
        return self.wait(probe, "volume %s" % volume_id, action, failure_states)["volume"]

    def _device(self, volume_id, action):
        """The volume's by-id link (its serial is the volume id), waited for: udev makes it a moment after ``in-use``."""
        link = os.path.join(self.os.get("by_id_dir") or "/dev/disk/by-id", "virtio-%s" % volume_id[:20])
        self.wait(lambda: (os.path.exists(link), {"status": "present" if os.path.exists(link) else "absent"}), "device link %s" % link, action, ())
        return link

    def volume_detach(self, attachment, check_mode=False):
        result = dict(attachment, device=None, attachment_id=None)
        if attachment.get("volume_id"):
            found = self.call("detach volume", "Cinder", self.conn.block_storage.find_volume, attachment["volume_id"], ignore_missing=True)
            vols = [found] if found is not None else []
        else:
            vols = self._volumes(conv_volume_name(attachment.get("snapshot") or ""))
        vols = [v for v in vols if ours(v)]
        if not vols or check_mode:
            return result, bool(vols)
        for vol in vols:
            self._delete_volume(vol.id, "detach volume %s" % vol.id)
        return result, True

    def _delete_volume(self, volume_id, action):
        vol = self.call(action, "Cinder", self.conn.block_storage.get_volume, volume_id)
        if vol.status in ("creating", "downloading", "reserved", "attaching"):  # Cinder lists an attachment once it is attached
            vol = self._wait_volume(volume_id, ("available", "in-use", "error"), action, ())
        for att in vol.attachments or []:
            self.call(action, "Nova", self.conn.compute.delete_volume_attachment, att.get("server_id"), vol.id, ignore_missing=True)
        if vol.attachments or vol.status in ("attaching", "reserved", "detaching"):
            vol = self._wait_volume(volume_id, "available", action, ("error", "error_detaching"))
        self.call(action, "Cinder", self.conn.block_storage.delete_volume, vol, ignore_missing=True)

        def probe():
            found = self.call(action, "Cinder", self.conn.block_storage.find_volume, volume_id, ignore_missing=True)
            return found is None, {"status": found.status if found is not None else "deleted"}
        self.wait(probe, "volume %s" % volume_id, action, ("error_deleting",))
