# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The import_plan filter (documented in import_plan.yml): what importing an image would rotate and prune."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.vmimage.replication.plugins.module_utils import _naming


def import_plan(catalog, server, snapshot_time, keep_last=7, keep_days=None):
    """``{image, latest, previous_latest, pruned}`` (names) after importing the snapshot of ``snapshot_time`` into ``catalog``."""
    # Imported when called: resolving any filter of the collection loads every filter file in each task's worker, and
    # _catalog brings the S3 library (about 0.3 s per task of the role, were it imported above).
    from ansible_collections.vmimage.replication.plugins.module_utils import _catalog  # pylint: disable=import-outside-toplevel

    try:
        name = _naming.image_name(server, snapshot_time)
        images = [dict(e) for e in (catalog or {}).get("images") or [] if e.get("name") != name]
        image = {"name": name, "snapshot_time": _naming.format_time(snapshot_time)}
        latest = (catalog or {}).get("latest")
        manifest = {"images": images + [image], "latest": latest.get("name") if isinstance(latest, dict) else latest}
        previous, pruned = _catalog.plan_import(manifest, image, int(keep_last), None if keep_days is None else float(keep_days))
    except (ValueError, TypeError, KeyError) as exc:
        raise AnsibleFilterError("import_plan: %s" % exc) from None
    return {"image": name, "latest": manifest["latest"], "previous_latest": previous["name"] if previous else None,
            "pruned": [e["name"] for e in pruned]}


class FilterModule:
    def filters(self):
        return {"import_plan": import_plan}
