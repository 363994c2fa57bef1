# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Retention of a server's in-region snapshots (``snapshot`` with ``keep_last`` / ``keep_days``), for every provider.

Only the collection's own snapshots of the server's volume count and are ever deleted (``created_by``); the rule is
``_naming.select_prune``'s. In check mode the snapshot the run would take counts as the newest, so the answer is the
one a real run would give.
"""

from __future__ import annotations

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def check_retention(keep_last, keep_days):
    """``keep_last`` as select_prune wants it (at least 1), or None when no retention was asked for."""
    if keep_last is None and keep_days is None:
        return None
    if keep_last is not None and keep_last < 1:
        raise ReplicationError("Failed to plan snapshot retention: keep_last %r would delete every snapshot; keep at least 1" % (keep_last,))
    if keep_days is not None and keep_days < 0:
        raise ReplicationError("Failed to plan snapshot retention: keep_days %r is negative; give a number of days of 0 or more" % (keep_days,))
    return keep_last if keep_last is not None else 1


def plan(snapshots, taken, keep_last, keep_days, now=None):
    """The snapshots past the retention, oldest first. ``taken`` is this run's snapshot (kept whatever the rule says)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ours = [s for s in snapshots if s.get("created_by") == _naming.CREATED_BY and s.get("snapshot_time")]
    if taken and taken.get("snapshot_time") and not any(s.get("name") == taken.get("name") for s in ours):
        ours.append(dict(taken, created_by=_naming.CREATED_BY))
    doomed = _naming.select_prune(ours, keep_last, keep_days=keep_days, now=now)
    return [s for s in doomed if not taken or s.get("name") != taken.get("name")]


def prune(adapter, server, volume, taken, keep_last, keep_days, check_mode=False, now=None):
    """Delete (or in check mode, name) the server's snapshots past the retention; the list of those deleted."""
    keep_last = check_retention(keep_last, keep_days)
    if keep_last is None:
        return []
    listed = adapter.snapshot_list(server=server, volume=volume)
    pruned = []
    for snap in plan(listed, taken, keep_last, keep_days, now=now):
        gone, changed = adapter.snapshot_delete(snap["name"], check_mode=check_mode)
        if changed:
            pruned.append(gone or snap)
    return pruned
