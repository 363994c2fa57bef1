# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Provider and target ``ibm_vpc``: IBM Cloud VPC instances, block storage volumes, snapshots and the image library.

Source: a server is a VPC instance found by name; its boot volume is snapshotted (user_tags carry the collection's
state: ``created-by``, ``source-server``, ``snapshot-time``), a volume made from the snapshot is attached to the
conversion host's instance and found under ``/dev/disk/by-id`` by its virtio serial. VPC cannot roll a volume back:
``snapshot_restore`` makes a *new* volume from the snapshot (named ``<snapshot>-restored``) in the source volume's
zone. Native mode (cross-region snapshot copy with retention) is the ``snapshot_copy`` module's backend, ``_ibm_vpc_copy``.
Target: see ``_ibm_vpc_images``.
"""

from __future__ import annotations

import datetime
import os

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._ibm_vpc_client import ApiException
from ansible_collections.vmimage.replication.plugins.module_utils._ibm_vpc_client import Base
from ansible_collections.vmimage.replication.plugins.module_utils._ibm_vpc_images import Target  # noqa: F401 pylint: disable=unused-import

OPTIONS = vpcc.OPTIONS


def volume_name(snapshot_name):
    """The temporary volume made from a snapshot for the conversion host (VPC names: 63 characters at most)."""
    return ("%s-conv" % snapshot_name)[-63:].lstrip("-")


class Source(Base, _providers.Source):
    name = "ibm_vpc"

    # --- the server ---------------------------------------------------------------------------------------------------------
    def instance(self, name, action="find server"):
        found = self.pages("%s %s" % (action, name), "list_instances", "instances", name=name)
        if not found:
            raise ReplicationError("Failed to %s %s: no instance of that name in region %s; check the name and ibm_vpc.region"
                                   % (action, name, self.vpc.get("region")), server=name)
        if len(found) > 1:
            raise ReplicationError("Failed to %s %s: %d instances have that name (%s); rename all but one, names must be unique for replication"
                                   % (action, name, len(found), ", ".join(i["id"] for i in found)), server=name)
        return found[0]

    def volume(self, volume_id):
        vol = self.call("read volume %s" % volume_id, "volume %s" % volume_id, "get_volume", volume_id)
        return {"id": vol["id"], "name": vol.get("name"), "size": (vol.get("capacity") or 0) * vpcc.GIB, "profile": (vol.get("profile") or {}).get("name"),
                "zone": (vol.get("zone") or {}).get("name"), "os": (vol.get("operating_system") or {}).get("name"), "status": vol.get("status")}

    def server_info(self, server):
        inst = self.instance(server)
        boot_id = (((inst.get("boot_volume_attachment") or {}).get("volume")) or {}).get("id")
        if not boot_id:
            raise ReplicationError("Failed to find server %s: instance %s has no boot volume" % (server, inst["id"]), server=server)
        boot = self.volume(boot_id)
        snaps = self.snapshots(source_volume_id=boot_id)
        return {"name": server, "id": inst["id"], "zone": (inst.get("zone") or {}).get("name"), "profile": (inst.get("profile") or {}).get("name"),
                "os": boot["os"], "boot_volume": boot, "volumes": [boot], "status": inst.get("status"),
                "latest_snapshot": self.public_snapshot(snaps[-1]) if snaps else None}

    # --- snapshots ----------------------------------------------------------------------------------------------------------
    def snapshot_create(self, volume, server=None, name=None, check_mode=False):
        when = _naming.format_time(datetime.datetime.now(datetime.timezone.utc))
        name = name or _naming.image_name(server or "snapshot", when)
        existing = self.snapshots(name=name)
        if existing:
            snap = existing[0]
            if (snap.get("source_volume") or {}).get("id") not in (volume, None):
                raise ReplicationError("Failed to snapshot volume %s: snapshot %s already exists of another volume; choose another name" % (volume, name))
            return self.public_snapshot(snap if check_mode else self.wait_snapshot(snap, "snapshot volume %s" % volume)), False
        user_tags = vpcc.tags(source_server=server, snapshot_time=_naming.stamp(when))
        if check_mode:
            return self.public_snapshot({"name": name, "source_volume": {"id": volume}, "user_tags": user_tags, "created_at": when}), True
        snap = self.call("snapshot volume %s" % volume, "volume %s" % volume, "create_snapshot",
                         {"source_volume": {"id": volume}, "name": name, "user_tags": user_tags})
        try:
            return self.public_snapshot(self.wait_snapshot(snap, "snapshot volume %s" % volume)), True
        except ReplicationError as failure:
            try:
                self._drop_snapshot(snap, "snapshot volume %s" % volume)  # a failed or stuck snapshot of this run is not left behind
            except ReplicationError as cleanup:  # the wait's failure stays the one reported; what is left is named too
                failure.extend_msg(cleanup.msg)
            raise

    def _drop_snapshot(self, snap, action, region=None):
        try:
            self.service(region).delete_snapshot(snap["id"])
        except (ApiException, OSError) as exc:
            if getattr(exc, "status_code", None) != 404:
                raise vpcc.fail(exc, action + " (and remove the snapshot it made, %s: remove it by hand)" % snap["name"],
                                "snapshot %s" % snap["name"], secret=self.vpc.get("api_key")) from None
            return
        self.wait_gone("get_snapshot", snap["id"], "snapshot %s" % snap["name"], action, region)

    def snapshot_list(self, server=None, volume=None, name=None):
        filters = {k: v for k, v in (("name", name), ("source_volume_id", volume)) if v}
        found = [self.public_snapshot(s) for s in self.snapshots(**filters)]
        return [s for s in found if server is None or s["server"] == server]

    def snapshot_delete(self, name, check_mode=False, region=None):
        found = self.snapshots(region=region, name=name)
        if not found:
            return None, False
        snap = found[0]
        if not vpcc.ours(snap):
            raise ReplicationError("Failed to remove snapshot %s: it was not made by %s (no created-by tag); remove it by hand if it is no longer needed"
                                   % (name, _naming.CREATED_BY), name=name)
        if not check_mode:
            self.call("remove snapshot %s" % name, "snapshot %s" % name, "delete_snapshot", snap["id"], region=region)
            self.wait_gone("get_snapshot", snap["id"], "snapshot %s" % name, "remove snapshot %s" % name, region)
        return self.public_snapshot(snap), True

    def snapshot_restore(self, name, volume=None, check_mode=False):
        """VPC cannot roll a volume back: a new volume ``<snapshot>-restored`` is made from the snapshot (idempotent by name)."""
        action = "restore snapshot %s" % name
        snap = self.find_snapshot(name, action)
        result = self.public_snapshot(snap)
        vol_name = ("%s-restored" % snap["name"])[-63:].lstrip("-")
        existing = self.pages(action, "list_volumes", "volumes", name=vol_name)
        if existing:
            result["restored_volume"] = {"id": existing[0]["id"], "name": vol_name}
            return result, False
        result["restored_volume"] = {"id": None, "name": vol_name}
        if check_mode:
            return result, True
        zone = self._zone_of(snap, volume)
        made = self._create_volume(snap, vol_name, zone, action)
        result["restored_volume"] = {"id": made["id"], "name": vol_name, "zone": zone}
        return result, True

    def _zone_of(self, snap, volume=None):
        source = self.get_or_none("get_volume", volume or (snap.get("source_volume") or {}).get("id") or "-")
        return (source or {}).get("zone", {}).get("name") or self.vpc.get("zone")

    def _create_volume(self, snap, name, zone, action, **tag_values):
        if not zone:
            raise ReplicationError("Failed to %s: the zone for the new volume is unknown (the source volume is gone)" % action)
        proto = {"name": name, "profile": {"name": self.vpc["volume_profile"]}, "zone": {"name": zone}, "source_snapshot": {"id": snap["id"]},
                 "user_tags": vpcc.tags(source_snapshot=snap["id"], **tag_values)}
        made = self.call(action, "volume %s" % name, "create_volume", proto)

        def probe():
            vol = self.call(action, "volume %s" % name, "get_volume", made["id"])
            return vol.get("status") == "available", {"status": vol.get("status"), "reasons": vol.get("status_reasons")}
        try:
            vpcc.wait(probe, self.params, "volume %s" % name, ("failed", "unusable"), action)
        except ReplicationError:
            self._delete_volume(made, action)
            raise
        return made

    # --- the volume on the conversion host ----------------------------------------------------------------------------------
    def _host(self, host):
        found = self.get_or_none("get_instance", host)
        return found or self.instance(host, action="find conversion host")

    def volume_attach(self, snapshot, host, check_mode=False):
        action = "attach a volume from snapshot %s" % snapshot
        snap = self.find_snapshot(snapshot, action)
        inst = self._host(host)
        zone = (inst.get("zone") or {}).get("name")
        source_zone = self._zone_of(snap)
        if source_zone and zone != source_zone:
            raise ReplicationError("Failed to %s: conversion host %s is in zone %s, the volume in %s; use a conversion host in zone %s"
                                   % (action, host, zone, source_zone, source_zone), zone=zone)
        answer = {"volume_id": None, "attachment_id": None, "device": None, "host": inst["id"], "snapshot": snap["name"]}
        name = volume_name(snap["name"])
        existing = [v for v in self.pages(action, "list_volumes", "volumes", name=name) if vpcc.ours(v)]
        att = None
        if existing:
            answer["volume_id"] = existing[0]["id"]
            att = next((a for a in existing[0].get("volume_attachments") or [] if (a.get("instance") or {}).get("id") == inst["id"]), None)
        if att is None and check_mode:
            return answer, True
        changed = att is None
        made = None
        try:
            if att is None:
                made = existing[0] if existing else self._create_volume(snap, name, zone, action, conversion_host=inst["id"])
                answer["volume_id"] = made["id"]
                att = self.call(action, "instance %s" % inst["id"], "create_instance_volume_attachment", inst["id"], {"id": made["id"]},
                                delete_volume_on_instance_delete=True, name=name)
            att = self._wait_attached(inst["id"], att["id"], action)
            answer["attachment_id"] = att["id"]
            answer["device"] = self._device(att, action)
        except ReplicationError:
            if made is not None:
                self.volume_detach(dict(answer))
            raise
        return answer, changed

    def _wait_attached(self, instance_id, att_id, action):
        """The attachment once ``attached`` (only then does it carry ``device.id``)."""
        def probe():
            att = self.call(action, "volume attachment %s" % att_id, "get_instance_volume_attachment", instance_id, att_id)
            return att.get("status") == "attached", {"status": att.get("status"), "attachment": att}
        return vpcc.wait(probe, self.params, "volume attachment %s" % att_id, ("deleting", "detaching"), action)["attachment"]

    def _device(self, att, action):
        """The by-id link of an attached attachment, waited for (udev makes it a moment after ``attached``)."""
        serial = (att.get("device") or {}).get("id")
        if not serial:
            raise ReplicationError("Failed to %s: volume attachment %s is attached but has no device.id; the VPC API did not say which "
                                   "virtio serial the volume has" % (action, att.get("id")))
        link = vpcc.by_id_path(self.vpc["by_id_dir"], serial)
        vpcc.wait(lambda: (os.path.exists(link), {"status": "present" if os.path.exists(link) else "absent"}), self.params,
                  "device link %s" % link, (), action)
        return link

    def volume_detach(self, attachment, check_mode=False):
        result = dict(attachment, device=None, attachment_id=None)
        vols = []
        if attachment.get("volume_id"):
            vol = self.get_or_none("get_volume", attachment["volume_id"])
            vols = [vol] if vol else []
        elif attachment.get("snapshot"):
            vols = self.pages("detach volumes of snapshot %s" % attachment["snapshot"], "list_volumes", "volumes", name=volume_name(attachment["snapshot"]))
        vols = [v for v in vols if vpcc.ours(v)]
        if not vols or check_mode:
            return result, bool(vols)
        for vol in vols:
            self._delete_volume(vol, "detach volume %s" % vol["id"])
        return result, True

    def _delete_volume(self, vol, action):
        for att in vol.get("volume_attachments") or self.call(action, "volume %s" % vol["id"], "get_volume", vol["id"]).get("volume_attachments") or []:
            inst = (att.get("instance") or {}).get("id")
            try:
                self.service().delete_instance_volume_attachment(inst, att["id"])
            except (ApiException, OSError) as exc:  # OSError: requests' RetryError once 429/5xx retries ran out
                if getattr(exc, "status_code", None) != 404:
                    raise vpcc.fail(exc, action, "attachment %s" % att["id"], secret=self.vpc.get("api_key")) from None
            self.wait_gone("get_volume_attachment_gone", (inst, att["id"]), "volume attachment %s" % att["id"], action)
        self.call(action, "volume %s" % vol["id"], "delete_volume", vol["id"])
        self.wait_gone("get_volume", vol["id"], "volume %s" % vol["id"], action)

    def _gone(self, method, ident, region):
        if method == "get_volume_attachment_gone":
            try:
                att = self.service(region).get_instance_volume_attachment(*ident).get_result()
            except ApiException as exc:
                if exc.status_code == 404:
                    return True, {"status": "deleted"}
                raise vpcc.fail(exc, "detach volume", "attachment %s" % ident[1], secret=self.vpc.get("api_key")) from None
            return False, {"status": att.get("status")}
        return super()._gone(method, ident, region)
