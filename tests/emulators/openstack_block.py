# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Cinder v3 volumes and snapshots of the OpenStack emulator (tests/emulators/openstack_server.py).

Rules from the block storage API reference and Cinder's behaviour: a volume is ``creating`` -> ``available``; a snapshot of
an ``in-use`` volume needs ``force`` below microversion 3.66; a volume with snapshots, or attached, cannot be deleted;
a volume from a snapshot is at least the snapshot's size; revert (``os-revert``, 3.40) takes only the volume's *latest*
snapshot, of the volume's size, while the volume is ``available`` (detached): ``reverting`` -> ``available``. GB sizes.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse

from tests.emulators import openstack_images
from tests.emulators import openstack_server as base

GB = 1024 ** 3


def copy_sparse(source, dest):
    """Copy a volume file keeping its holes (a 1 GB volume with 2 MiB of data copies 2 MiB)."""
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", source, dest], check=True)


def _query(query):
    return {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}


class Block:
    def __init__(self, cloud):
        self.cloud = cloud

    def path(self, volume_id):
        return os.path.join(self.cloud.data_dir, "volume-%s.img" % volume_id)

    def _snap_path(self, snap_id):
        return os.path.join(self.cloud.data_dir, "snapshot-%s.img" % snap_id)

    # --- routing ----------------------------------------------------------------------------------------------------------------
    def route(self, method, rest, query, body, micro, project):
        match = re.match(r"^/(volumes|snapshots)(?:/(detail|[0-9a-f-]{36}))?(?:/(action|metadata))?$", rest)
        if not match:
            raise base.Fault(404, "The resource could not be found.")
        kind, ident, action = match.groups()
        store = self.cloud.volumes if kind == "volumes" else self.cloud.snapshots
        view = self.volume_view if kind == "volumes" else self.snapshot_view
        if ident in (None, "detail") and method == "GET":
            found = [r for r in store.values() if self._matches(r, _query(query))]
            return 200, {kind: [view(r, micro) for r in sorted(found, key=lambda r: r["created_at"], reverse=True)]}
        if ident is None and method == "POST":
            record = self.create_volume(body["volume"], project) if kind == "volumes" else self.create_snapshot(body["snapshot"], micro, project)
            return 202, {kind[:-1]: view(record, micro)}
        record = self._get(kind, ident)
        if action == "metadata":
            if method == "POST":  # merges, as Cinder's "create or update metadata"
                record["metadata"].update({str(k): str(v) for k, v in body["metadata"].items()})
            elif method != "GET":
                raise base.Fault(405, "Method not allowed")
            return 200, {"metadata": dict(record["metadata"])}
        if action and method == "POST":
            return self._action(record, body, micro)
        if method == "GET":
            return 200, {kind[:-1]: view(record, micro)}
        if method == "DELETE":
            (self.delete_volume if kind == "volumes" else self.delete_snapshot)(record)
            return 202, None
        raise base.Fault(405, "Method not allowed")

    @staticmethod
    def _matches(record, filters):
        for key in ("name", "status", "volume_id"):
            if key in filters and record.get(key) != filters[key]:
                return False
        return True

    def _get(self, kind, ident):
        store = self.cloud.volumes if kind == "volumes" else self.cloud.snapshots
        if ident not in store:
            raise base.Fault(404, "%s %s could not be found." % ("Volume" if kind == "volumes" else "Snapshot", ident))
        return store[ident]

    # --- volumes ----------------------------------------------------------------------------------------------------------------
    def new_volume(self, name, size_gb, project, zone="nova", snapshot=None, data=b"", bootable=False):
        vid = self.cloud.new_id()
        rec = {"id": vid, "name": name, "size": int(size_gb), "status": "creating", "attachments": [], "availability_zone": zone,
               "bootable": "true" if bootable else "false", "snapshot_id": snapshot["id"] if snapshot else None, "metadata": {},
               "volume_type": "__DEFAULT__", "created_at": base.now(), "updated_at": None, "project_id": project, "description": None}
        if snapshot is not None:
            copy_sparse(self._snap_path(snapshot["id"]), self.path(vid))
        else:
            with open(self.path(vid), "wb") as handle:
                handle.write(data)
        os.truncate(self.path(vid), rec["size"] * GB)
        self.cloud.volumes[vid] = rec
        return rec

    def create_volume(self, spec, project):
        snapshot = None
        if spec.get("snapshot_id"):
            snapshot = self._get("snapshots", spec["snapshot_id"])
            if snapshot["status"] != "available":
                raise base.Fault(400, "Invalid snapshot: Originating snapshot status must be one of 'available' values")
        size = spec.get("size") if spec.get("size") is not None else (snapshot or {}).get("size")
        if not isinstance(size, int) or size < 1:
            raise base.Fault(400, "Invalid input received: Volume size '%s' must be an integer and greater than 0" % size)
        if snapshot is not None and size < snapshot["size"]:
            raise base.Fault(400, "Invalid input received: Volume size '%s'GB cannot be smaller than the snapshot size %sGB. They must be >= "
                                  "original snapshot size." % (size, snapshot["size"]))
        zone = spec.get("availability_zone") or (self.cloud.volumes[snapshot["volume_id"]]["availability_zone"] if snapshot else "nova")
        rec = self.new_volume(spec.get("name"), size, project, zone=zone, snapshot=snapshot)
        rec.update(metadata=dict(spec.get("metadata") or {}), description=spec.get("description"))
        if snapshot is not None:  # Cinder copies the source's bootable flag; a volume from an image is bootable
            rec["bootable"] = self.cloud.volumes[snapshot["volume_id"]]["bootable"]
        if spec.get("imageRef"):
            rec["bootable"] = "true"
            try:
                openstack_images.volume_from_image(self.cloud, rec, spec["imageRef"], self.cloud.request_token)
            except base.Fault:
                self.cloud.volumes.pop(rec["id"])
                os.unlink(self.path(rec["id"]))
                raise
        else:
            self.cloud.later(lambda: base.touch(rec, status="available"))
        return rec

    def delete_volume(self, rec):
        if rec["status"] not in ("available", "error", "error_restoring", "error_extending", "error_managing") or rec["attachments"] \
                or any(s["volume_id"] == rec["id"] for s in self.cloud.snapshots.values()):
            raise base.Fault(400, "Invalid volume: Volume status must be available or error or error_restoring or error_extending or "
                                  "error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, "
                                  "or be disassociated from snapshots after volume transfer.")
        base.touch(rec, status="deleting")

        def gone():
            self.cloud.volumes.pop(rec["id"], None)
            if os.path.exists(self.path(rec["id"])):
                os.unlink(self.path(rec["id"]))
        self.cloud.later(gone)

    def volume_view(self, rec, micro):
        view = {k: v for k, v in rec.items() if k not in ("project_id",)}
        view.update({"os-vol-tenant-attr:tenant_id": rec["project_id"], "encrypted": False, "multiattach": False, "replication_status": None,
                     "consistencygroup_id": None, "source_volid": None, "user_id": None, "migration_status": None,
                     "links": [{"rel": "self", "href": "volumes/%s" % rec["id"]}],
                     "attachments": [dict(a) for a in rec["attachments"]]})
        if micro >= (3, 48):
            view["service_uuid"] = None
        if micro >= (3, 63):
            view["volume_type_id"] = "00000000-0000-0000-0000-000000000001"
        return view

    def _action(self, rec, body, micro):
        if "revert" not in body:
            raise base.Fault(400, "There is no such action: %s" % ", ".join(body))
        if micro < (3, 40):
            raise base.Fault(404, "The resource could not be found.")
        snap = self._get("snapshots", body["revert"]["snapshot_id"])
        mine = sorted((s for s in self.cloud.snapshots.values() if s["volume_id"] == rec["id"]), key=lambda s: s["created_at"])
        if snap["volume_id"] != rec["id"] or mine[-1]["id"] != snap["id"]:
            raise base.Fault(400, "Specified snapshot %s is not the latest one of volume %s." % (snap["id"], rec["id"]))
        if rec["size"] != snap["size"]:
            raise base.Fault(400, "Can't revert volume %s to its latest snapshot %s. The volume size must be equal to the snapshot size."
                             % (rec["id"], snap["id"]))
        if rec["status"] != "available":
            raise base.Fault(400, "Invalid volume: Can't revert volume %s to its latest snapshot %s. Volume's status must be 'available'."
                             % (rec["id"], snap["id"]))
        if snap["status"] != "available":
            raise base.Fault(400, "Invalid snapshot: Can't revert volume %s to its latest snapshot %s. Snapshot's status must be 'available'."
                             % (rec["id"], snap["id"]))
        base.touch(rec, status="reverting")
        base.touch(snap, status="restoring")

        def done():
            copy_sparse(self._snap_path(snap["id"]), self.path(rec["id"]))
            base.touch(rec, status="available")
            base.touch(snap, status="available")
        self.cloud.later(done)
        return 202, None

    # --- snapshots --------------------------------------------------------------------------------------------------------------
    def create_snapshot(self, spec, micro, project):
        volume = self.cloud.volumes.get(spec.get("volume_id"))
        if volume is None:
            raise base.Fault(404, "Volume %s could not be found." % spec.get("volume_id"))
        force = str(spec.get("force", False)).lower() in ("true", "1", "yes")
        if volume["status"] == "in-use" and micro < (3, 66) and not force:
            raise base.Fault(400, "Invalid volume: Volume %s status must be available, but current status is: in-use." % volume["id"])
        if volume["status"] not in ("available", "in-use"):
            raise base.Fault(400, "Invalid volume: Volume %s status must be available or in-use, but current status is: %s."
                             % (volume["id"], volume["status"]))
        sid = self.cloud.new_id()
        copy_sparse(self.path(volume["id"]), self._snap_path(sid))  # the point in time is the request's
        rec = {"id": sid, "name": spec.get("name"), "description": spec.get("description"), "volume_id": volume["id"], "size": volume["size"],
               "status": "creating", "metadata": dict(spec.get("metadata") or {}), "created_at": base.now(), "updated_at": None,
               "project_id": project}
        self.cloud.snapshots[sid] = rec
        self.cloud.later(lambda: base.touch(rec, status="available"))
        return rec

    def delete_snapshot(self, rec):
        if rec["status"] not in ("available", "error"):
            raise base.Fault(400, "Invalid snapshot: Snapshot status must be available or error and must not be part of a group.")
        base.touch(rec, status="deleting")

        def gone():
            self.cloud.snapshots.pop(rec["id"], None)
            if os.path.exists(self._snap_path(rec["id"])):
                os.unlink(self._snap_path(rec["id"]))
        self.cloud.later(gone)

    @staticmethod
    def snapshot_view(rec, micro):
        view = {k: v for k, v in rec.items() if k != "project_id"}
        view.update({"os-extended-snapshot-attributes:project_id": rec["project_id"],
                     "os-extended-snapshot-attributes:progress": "100%" if rec["status"] == "available" else "0%"})
        if micro >= (3, 14):
            view["group_snapshot_id"] = None
        if micro >= (3, 65):
            view["consumes_quota"] = True
        return view
