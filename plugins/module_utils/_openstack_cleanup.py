# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What a killed replication left in one OpenStack region, found by the collection's marks and removed (``openstack_cleanup``).

- temporary volumes: the collection's (metadata ``created-by``) made for a conversion host (``conversion-host``), with
  their attachments;
- Cinder snapshots of the collection that never became ``available`` (``creating``, ``error``); an available one is kept
  and listed: its metadata does not tell a snapshot taken only for a copy from one an operator keeps;
- Glance images of the collection that never became ``active`` (``queued``, ``saving``, ``killed``, ``importing``): the
  snapshot images of image-backed servers (property ``created-by``) and the target's imports (``vmimage_created_by``).

Only resources older than ``older_than`` seconds count, so a run in progress is never disturbed. A region without a
block-storage endpoint (a target region with Glance only) is searched for images alone.
"""

from __future__ import annotations

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _openstack_cloud, _openstack_source
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

UNFINISHED_IMAGES = ("queued", "saving", "killed", "importing", "uploading")


def age_seconds(created, now):
    if not created:
        return 0.0
    when = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return (now - when).total_seconds()


def _image_ours(image):
    props = image.properties or {}
    return _naming.CREATED_BY in (props.get("created-by"), props.get("vmimage_created_by"))


class Cleanup(_openstack_source.Source):
    def find(self, older_than, now):
        """``{volumes, snapshots, images, kept}``: the leftovers older than ``older_than`` (SDK resources) and what is kept."""
        def old(resource):
            return age_seconds(resource.created_at, now) >= older_than
        volumes, snapshots, kept = [], [], []
        if self._has_block_storage():
            volumes = [v for v in self.call("list volumes", "Cinder", lambda: list(self.conn.block_storage.volumes()))
                       if _openstack_source.ours(v) and "conversion-host" in (v.metadata or {}) and old(v)]
            ours = [s for s in self._snapshots() if _openstack_source.ours(s) and old(s)]
            snapshots = [s for s in ours if s.status == "error"]  # Cinder deletes only available or error snapshots
            kept = ["snapshot %s" % s.name if s.status == "available" else
                    "snapshot %s (%s: Cinder deletes it only once an admin resets its state)" % (s.name, s.status)
                    for s in ours if s.status != "error"]
        images = [i for i in self.call("list images", "Glance", lambda: list(self.conn.image.images())) if _image_ours(i) and old(i)]
        kept += ["image %s" % i.name for i in images if i.status not in UNFINISHED_IMAGES]
        return {"volumes": volumes, "snapshots": snapshots, "images": [i for i in images if i.status in UNFINISHED_IMAGES], "kept": kept}

    def _has_block_storage(self):
        try:
            self.conn.block_storage.get_endpoint()
        except _openstack_cloud.SDK_ERRORS as exc:
            if type(exc).__name__ in ("EndpointNotFound", "EmptyCatalog") or "endpoint" in str(exc).lower():
                return False
            raise _openstack_cloud.fail("list volumes", _openstack_cloud.where(self.os, "Cinder"), exc, "Cinder", "block-storage") from None
        return True

    def remove(self, found, check_mode=False):
        """Remove what ``find`` found (volumes first: a volume made from a snapshot holds it); the names removed."""
        removed = {"volumes": [v.name for v in found["volumes"]], "snapshots": [s.name for s in found["snapshots"]],
                   "images": [i.name for i in found["images"]], "kept": found["kept"]}
        if check_mode:
            return removed
        failures = []
        steps = [("volumes", v.name, self._delete_volume, v.id) for v in found["volumes"]]
        steps += [("snapshots", x.name, self._delete_snapshot, x) for x in found["snapshots"]]
        steps += [("images", i.name, self.images.delete, i) for i in found["images"]]
        for kind, name, remove, what in steps:
            try:  # each one tried, whatever the one before raised
                remove(what, "remove leftover %s %s" % (kind[:-1], name))
            except ReplicationError as exc:
                failures.append(exc.msg)
                removed[kind].remove(name)
        if failures:
            raise ReplicationError("Failed to remove %d of the leftovers: %s" % (len(failures), " | ".join(failures)), removed=removed)
        return removed
