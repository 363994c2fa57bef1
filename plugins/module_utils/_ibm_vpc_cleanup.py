# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What a killed replication left in IBM Cloud VPC, found by the collection's marks and removed (``vpc_cleanup``).

- temporary volumes: the collection's (``created-by``) made for a conversion host (``conversion-host`` tag), with
  their attachments;
- snapshots: the collection's that never became ``stable`` (``pending``, ``failed``). A stable snapshot of the
  collection is kept and listed: its tags do not tell a snapshot taken only for a copy from one kept by retention;
- images: ``pending`` / ``failed`` images named ``<server>-YYYYMMDD-HHMMSS`` for the given servers (VPC images carry no
  user tags; the name is the collection's mark).

Only resources older than ``older_than`` seconds count, so a run in progress is never disturbed.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc

UNFINISHED = ("pending", "failed")


def age_seconds(resource, now):
    created = resource.get("created_at")
    if not created:
        return 0.0
    when = datetime.datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (now - when).total_seconds()


def image_pattern(servers):
    return re.compile(r"^(%s)-\d{8}-\d{6}$" % "|".join(re.escape(s) for s in servers)) if servers else None


class Cleanup(_ibm_vpc.Source):
    def find(self, servers, older_than, now):
        """``{volumes, snapshots, images, kept}``: the leftovers older than ``older_than`` (raw records) and what is kept."""
        def old(resource):
            return age_seconds(resource, now) >= older_than
        volumes = [v for v in self.pages("list volumes", "list_volumes", "volumes")
                   if vpcc.ours(v) and "conversion-host" in vpcc.parse_tags(v.get("user_tags")) and old(v)]
        ours = [s for s in self.snapshots() if vpcc.ours(s) and old(s)]
        snapshots = [s for s in ours if s.get("lifecycle_state") in UNFINISHED]
        kept = ["snapshot %s" % s["name"] for s in ours if s not in snapshots]
        pattern = image_pattern(servers)
        images = [i for i in self.pages("list images", "list_images", "images", visibility="private")
                  if pattern and pattern.match(i.get("name") or "") and i.get("status") in UNFINISHED and old(i)] if pattern else []
        return {"volumes": volumes, "snapshots": snapshots, "images": images, "kept": kept}

    def remove(self, found, check_mode=False):
        """Remove what ``find`` found (volumes first: a volume may be made from a snapshot); the names removed."""
        removed = {"volumes": [v["name"] for v in found["volumes"]], "snapshots": [s["name"] for s in found["snapshots"]],
                   "images": [i["name"] for i in found["images"]], "kept": found["kept"]}
        if check_mode:
            return removed
        for vol in found["volumes"]:
            self._delete_volume(vol, "remove leftover volume %s" % vol["name"])
        wait = self.params.get("wait") is not False
        for snap in found["snapshots"]:
            self._delete_gone_ok("delete_snapshot", "get_snapshot", snap, "snapshot", wait)
        for image in found["images"]:
            self._delete_gone_ok("delete_image", "get_image", image, "image", wait)
        return removed

    def _delete_gone_ok(self, delete, get, record, kind, wait):
        """Delete ``record``; one already gone (404) is fine. Waits for it to be gone when ``wait``."""
        action = "remove leftover %s %s" % (kind, record["name"])
        try:
            getattr(self.service(), delete)(record["id"])
        except (vpcc.ApiException, OSError) as exc:
            if getattr(exc, "status_code", None) == 404:
                return
            raise vpcc.fail(exc, action, "%s %s" % (kind, record["name"]), secret=self.vpc.get("api_key")) from None
        if wait:
            self.wait_gone(get, record["id"], "%s %s" % (kind, record["name"]), action)
