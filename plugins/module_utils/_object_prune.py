# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Retention of loose objects the collection uploaded (the OVAs kept after PowerVS imports).

Only objects whose metadata says ``created-by: vmimage.replication`` are ever candidates; they are grouped by their
``source-server`` metadata and each group follows the collection's one retention rule (``_naming.select_prune``:
the newest ``keep_last`` stay, an older one goes only when it is more than ``keep_days`` days old, if given).
"""

from __future__ import annotations

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def list_made(client, bucket, prefix, fmt=None):
    """Objects under ``prefix`` made by the collection (and of format ``fmt`` when given): [{key, size, server, snapshot_time}]."""
    found = []
    for item in _cos.list_under_prefix(client, bucket, prefix, "objects"):
        obj = _cos.head(client, bucket, item["key"])
        meta = (obj or {}).get("metadata") or {}
        if meta.get("created-by") != _naming.CREATED_BY or (fmt and meta.get("format") != fmt):
            continue
        found.append({"key": item["key"], "size": obj["size"], "server": meta.get("source-server") or "",
                      "snapshot_time": _time(meta.get("snapshot-time"), obj["last_modified"])})
    return found


def _time(stamp, last_modified):
    """The snapshot time of the metadata when it reads as a time with a zone, else the object's last modification."""
    try:
        return _naming.format_time(stamp) if stamp else last_modified
    except (ValueError, TypeError):
        return last_modified


def plan(objects, keep_last, keep_days=None, now=None):
    """The objects to delete, per ``source-server`` group, oldest first."""
    if keep_last < 1:
        raise ReplicationError("Failed to plan retention: keep_last must be at least 1 (the newest object always stays)")
    if keep_days is not None and keep_days < 0:
        raise ReplicationError("Failed to plan retention: keep_days must be 0 or more days")
    groups = {}
    for obj in objects:
        groups.setdefault(obj["server"], []).append(dict(obj, name=obj["key"]))
    prune = []
    for server in sorted(groups):
        prune.extend(_naming.select_prune(groups[server], keep_last, keep_days, now))
    return [{name: value for name, value in obj.items() if name != "name"} for obj in prune]
