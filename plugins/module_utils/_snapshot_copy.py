# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Cross-region snapshot copy with retention, the same for every provider.

No database: each copy carries its state in tags (``created-by: vmimage.replication``,
the origin snapshot id and region, the origin's start time, the volume's id, type,
IOPS, size and zone, and the selector of the job that made it). A run:

1. lists the source snapshots the selector matches (completed ones only);
2. lists the copies at each destination that this collection made for this
   source region and selector (nothing else is ever touched);
3. copies what is missing, at most ``max_concurrent`` in flight per destination,
   backing off when the provider says slow down; a copy that retention would
   delete at once is not made;
4. deletes the copies past the retention (per origin volume and destination:
   the newest ``keep_last`` are kept, and of the rest those younger than
   ``keep_days``), with ``_naming.select_prune``'s rule.

A backend (``_aws.CopyBackend``) answers: ``sources()``, ``copies(region)``,
``start_copy(source, region, tags)``, ``states(region, ids)``, ``delete(region, id)``.
"""

from __future__ import annotations

import hashlib
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _wait
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, WaitTimeout

CREATED_BY_KEY = "created-by"
PREFIX = "vmimage.replication/"
ORIGIN_ID = PREFIX + "origin-snapshot-id"
ORIGIN_REGION = PREFIX + "origin-region"
START_TIME = PREFIX + "start-time"
VOLUME_ID = PREFIX + "volume-id"
VOLUME_TYPE = PREFIX + "volume-type"
VOLUME_IOPS = PREFIX + "volume-iops"
VOLUME_SIZE = PREFIX + "volume-size"
ZONE = PREFIX + "availability-zone"
SELECTOR = PREFIX + "selector"
# AWS allows 50 tags on a resource and 256 characters in a value.
MAX_CARRIED_TAGS = 36
MAX_VALUE = 256


class Throttled(ReplicationError):
    """The provider refused to start one more copy now (concurrency limit, rate limit): try again later."""


def selector_label(tags=None, volume_ids=None, velero=None):
    """A short, stable text naming what a job selects (written on every copy it makes)."""
    if velero:
        text = "velero:%s" % velero
    elif tags:
        text = "tags:" + ",".join("%s=%s" % (k, tags[k]) for k in sorted(tags))
    elif volume_ids:
        text = "volumes:" + ",".join(sorted(volume_ids))
    else:
        raise ReplicationError("Failed to select snapshots: the selector is empty; give tags, volume_ids or velero (an empty selector "
                               "would copy every snapshot of the region)")
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE - 17] + "#" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return text


def state_tags(source, source_region, selector):
    """The tags of the copy of ``source``: its own tags (not ``aws:`` ones) plus the collection's state."""
    carried = {k: v for k, v in sorted((source.get("tags") or {}).items())
               if not k.startswith("aws:") and not k.startswith(PREFIX) and k != CREATED_BY_KEY}
    tags = dict(list(carried.items())[:MAX_CARRIED_TAGS])
    state = {
        CREATED_BY_KEY: _naming.CREATED_BY,
        ORIGIN_ID: source["id"],
        ORIGIN_REGION: source_region,
        START_TIME: _naming.format_time(source["start_time"]),
        VOLUME_ID: source.get("volume_id"),
        VOLUME_TYPE: source.get("volume_type"),
        VOLUME_IOPS: source.get("iops"),
        VOLUME_SIZE: source.get("size"),
        ZONE: source.get("zone"),
        SELECTOR: selector,
    }
    tags.update({k: str(v)[:MAX_VALUE] for k, v in state.items() if v not in (None, "")})
    return tags


def parse_copy(snapshot_id, region, state, tags):
    """A copy record from a snapshot's tags; None when the collection did not make it."""
    if tags.get(CREATED_BY_KEY) != _naming.CREATED_BY or ORIGIN_ID not in tags or START_TIME not in tags:
        return None
    return dict(
        id=snapshot_id, region=region, state=state,
        origin_snapshot_id=tags[ORIGIN_ID], origin_region=tags.get(ORIGIN_REGION), start_time=tags[START_TIME],
        volume_id=tags.get(VOLUME_ID), volume_type=tags.get(VOLUME_TYPE),
        iops=int(tags[VOLUME_IOPS]) if tags.get(VOLUME_IOPS, "").isdigit() else None,
        size=int(tags[VOLUME_SIZE]) if tags.get(VOLUME_SIZE, "").isdigit() else None,
        zone=tags.get(ZONE), selector=tags.get(SELECTOR),
        tags={k: v for k, v in tags.items() if not k.startswith(PREFIX) and k != CREATED_BY_KEY},
    )


def check_retention(keep_last, keep_days):
    """Refuse a retention that would delete every copy; return keep_last as select_prune wants it."""
    if keep_last is None and keep_days is None:
        raise ReplicationError("Failed to plan retention: set retention_days and/or retention_count")
    if keep_last is not None and keep_last < 1:
        raise ReplicationError("Failed to plan retention: retention_count %r would delete every copy; keep at least 1" % (keep_last,))
    if keep_days is not None and keep_days <= 0:
        raise ReplicationError("Failed to plan retention: retention_days %r would delete every copy as soon as it is made; "
                               "give a number of days above 0" % (keep_days,))
    # With days only, the newest copy of each volume is still kept: a schedule that stopped leaves its last copy.
    return keep_last if keep_last is not None else 1


def prune(copies, keep_last, keep_days, now):
    """The copies past the retention, per (destination, origin volume), oldest first."""
    groups = {}
    for copy in copies:
        groups.setdefault((copy["region"], copy.get("volume_id") or copy["origin_snapshot_id"]), []).append(
            dict(copy, name=copy.get("id") or "~" + copy["origin_snapshot_id"], snapshot_time=copy["start_time"],
                 created_by=_naming.CREATED_BY))
    doomed = []
    for key in sorted(groups):
        doomed.extend(_naming.select_prune(groups[key], keep_last, keep_days=keep_days, now=now))
    for item in doomed:
        item.pop("name")
        item.pop("snapshot_time")
        item.pop("created_by")
    return doomed


def plan(sources, copies, destinations, source_region, selector, keep_last, keep_days, now):
    """What a run does: ``{"copy": [{source, region, tags}], "delete": [copy], "present": [copy]}``.

    ``copies`` are every copy the collection made at the destinations (parse_copy records); only those of
    ``source_region`` and ``selector`` are this job's. A missing copy whose origin retention would delete at
    once is not made (else every run would copy it and delete it again).
    """
    mine = [c for c in copies if c["origin_region"] == source_region and c["selector"] == selector and c["region"] in destinations]
    # A copy that ended in error is no copy: it is deleted, and the snapshot copied again.
    broken = [c for c in mine if c["state"] == "error"]
    ours = [c for c in mine if c["state"] != "error"]
    have = {(c["region"], c["origin_snapshot_id"]) for c in ours}
    wanted = []
    for region in destinations:
        for source in sorted(sources, key=lambda s: (_naming.parse_time(s["start_time"]), s["id"])):
            if (region, source["id"]) not in have:
                wanted.append(dict(region=region, origin_snapshot_id=source["id"], volume_id=source.get("volume_id"),
                                   start_time=_naming.format_time(source["start_time"]), source=source))
    doomed = prune(ours + wanted, keep_last, keep_days, now)
    skipped = {(d["region"], d["origin_snapshot_id"]) for d in doomed if "source" in d}
    to_copy = [dict(source=w["source"], region=w["region"], tags=state_tags(w["source"], source_region, selector))
               for w in wanted if (w["region"], w["origin_snapshot_id"]) not in skipped]
    return {"copy": to_copy, "delete": broken + [d for d in doomed if "source" not in d], "present": ours, "broken": broken,
            "too_old": sorted({w["origin_snapshot_id"] for w in wanted if (w["region"], w["origin_snapshot_id"]) in skipped})}


def run_copies(backend, jobs, max_concurrent, timeout, sleep=10.0, wait=True, clock=time.monotonic, pause=time.sleep):
    """Start ``jobs`` (plan()["copy"]) with at most ``max_concurrent`` in flight per destination; wait for them.

    The wait is bounded by ``timeout`` seconds (not by a number of attempts), so a copy of several hours
    succeeds when the timeout allows it. A refusal to start (Throttled) lowers that destination's limit to what
    is in flight and retries later. Returns ``{"completed": [...], "failed": [...], "pending": [...]}``; a
    timeout raises WaitTimeout naming the copies still running (the next run finds them by their tags).
    """
    queue = list(jobs)
    limit = {}
    inflight = []  # dicts: job + id
    done = {"completed": [], "failed": [], "pending": []}
    backoff = {"until": 0.0, "delay": sleep}

    def start_more():
        now = clock()
        if now < backoff["until"]:
            return
        for job in list(queue):
            region = job["region"]
            busy = sum(1 for item in inflight if item["region"] == region)
            if busy >= limit.get(region, max_concurrent):
                continue
            try:
                copy_id = backend.start_copy(job["source"], region, job["tags"])
            except Throttled:
                limit[region] = max(1, busy)
                backoff["until"] = now + backoff["delay"]
                backoff["delay"] = min(backoff["delay"] * 2, 300.0)
                return
            backoff["delay"] = sleep
            queue.remove(job)
            inflight.append(dict(job, id=copy_id))

    def probe():
        start_more()
        by_region = {}
        for item in inflight:
            by_region.setdefault(item["region"], []).append(item["id"])
        for region, ids in by_region.items():
            states = backend.states(region, ids)
            for item in [i for i in inflight if i["region"] == region]:
                state = states.get(item["id"], "missing")
                if state in ("completed", "available"):
                    done["completed"].append(_record(item, state))
                    inflight.remove(item)
                elif state in ("error", "failed", "missing"):
                    done["failed"].append(_record(item, state))
                    inflight.remove(item)
        finished = not queue and not inflight
        return finished, {"status": "done" if finished else "copying", "in_flight": len(inflight), "queued": len(queue)}

    if not wait:
        start_more()
        done["pending"] = [_record(item, "pending") for item in inflight]
        done["not_started"] = [_record(dict(job, id=None), "queued") for job in queue]
        return done
    try:
        _wait.wait_until(probe, timeout, sleep=sleep, what="snapshot copies", clock=clock, pause=pause)
    except WaitTimeout as exc:
        raise WaitTimeout("Failed to finish snapshot copies within wait_timeout=%ss: %d still copying (%s), %d not started; they keep "
                          "running and the next run finds them by their tags, or raise wait_timeout"
                          % (timeout, len(inflight), ", ".join(i["id"] for i in inflight), len(queue)),
                          last_state=exc.last_state, completed=done["completed"]) from None
    return done


def _record(item, state):
    source = item["source"]
    return dict(id=item["id"], region=item["region"], state=state, origin_snapshot_id=source["id"],
                volume_id=source.get("volume_id"), start_time=_naming.format_time(source["start_time"]))


def execute(backend, params, check_mode, now, sources=None, clock=time.monotonic, pause=time.sleep):
    """One run of the module: plan, copy (unless check mode), delete past retention; the module's result.

    ``changed`` is true only when something was (or, in check mode, would be) copied or deleted.
    """
    keep_last = check_retention(params.get("retention_count"), params.get("retention_days"))
    destinations = list(dict.fromkeys(params["destination_regions"]))
    if params["region"] in destinations:
        raise ReplicationError("Failed to plan copies: destination_regions lists the source region %s; copies go to other regions" % params["region"])
    selector = backend.selector
    if sources is None:
        sources = backend.sources()
    copies = []
    for region in destinations:
        copies.extend(backend.copies(region))
    result = dict(changed=False, selector=selector, source_snapshots=[s["id"] for s in sources], copied=[], deleted=[], pending=[])
    if not sources:
        result["msg"] = "nothing to copy: the selector %s matches no completed snapshot in %s" % (selector, params["region"])
    the_plan = plan(sources, copies, destinations, params["region"], selector, keep_last, params.get("retention_days"), now)
    result["present"] = [dict(id=c["id"], region=c["region"], state=c["state"], origin_snapshot_id=c["origin_snapshot_id"],
                              start_time=c["start_time"]) for c in the_plan["present"]]
    result["skipped_too_old"] = the_plan["too_old"]
    if check_mode:
        result["copied"] = [_record(dict(job, id=None), "would copy") for job in the_plan["copy"]]
        result["deleted"] = [_deleted(c) for c in the_plan["delete"]]
        result["changed"] = bool(result["copied"] or result["deleted"])
        return result
    outcome = run_copies(backend, the_plan["copy"], params["max_concurrent_copies"], params["wait_timeout"], sleep=params["wait_sleep"],
                         wait=params["wait"], clock=clock, pause=pause)
    result["copied"] = outcome["completed"] + outcome["pending"]
    result["pending"] = outcome["pending"] + outcome.get("not_started", [])
    if outcome["failed"]:
        result["changed"] = bool(result["copied"])
        raise ReplicationError("Failed to copy %d snapshot(s): %s ended %s; nothing was deleted, the next run tries them again"
                               % (len(outcome["failed"]), ", ".join("%s -> %s" % (f["origin_snapshot_id"], f["region"]) for f in outcome["failed"]),
                                  ", ".join(sorted({f["state"] for f in outcome["failed"]}))), **result)
    # Retention over what exists now (this run's completed copies included), never over a copy that did not finish.
    made = [dict(id=c["id"], region=c["region"], state=c["state"], origin_snapshot_id=c["origin_snapshot_id"], volume_id=c["volume_id"],
                 start_time=c["start_time"]) for c in result["copied"]]
    for copy in the_plan["broken"] + prune(the_plan["present"] + made, keep_last, params.get("retention_days"), now):
        backend.delete(copy["region"], copy["id"])
        result["deleted"].append(_deleted(copy))
    result["changed"] = bool(result["copied"] or result["deleted"])
    return result


def _deleted(copy):
    return dict(id=copy["id"], region=copy["region"], origin_snapshot_id=copy["origin_snapshot_id"], start_time=copy["start_time"])
