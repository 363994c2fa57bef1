# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""At most N replications at once on one conversion host: N slot files beside the run locks.

A fleet spreads its servers over a pool of conversion hosts; each host runs at most
``slots`` of them at once and the others wait for a slot (bounded). A slot is the file
``<dir>/slots/<i>.slot`` (O_EXCL), naming the server run that holds it by the path and the
token of that run's lock (see _run_lock). A slot lives exactly as long as that lock: when the
lock is gone, held by another token, or stale (its controller died), the slot is free again,
so a killed run never keeps a slot and no heartbeat of its own is needed. A slot file is
written aside and linked into place, so it is never seen half written; a dead one is removed
under a reclaim mutex by the one taker that holds it, after looking again.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def slot_dir(directory):
    return os.path.join(os.path.expanduser(directory), "slots")


def slot_path(directory, index):
    return os.path.join(slot_dir(directory), "%d.slot" % index)


def _read(path):
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


def alive(record, stale_after, clock=time.time):
    """Whether the run a slot record names still holds its lock (and its heartbeat is fresh)."""
    if not record or not record.get("lock") or not record.get("token"):
        return False
    holder = _run_lock.read(record["lock"], clock=clock)
    return holder is not None and holder.get("token") == record["token"] and holder["age"] <= stale_after


def holders(directory, slots, stale_after, clock=time.time):
    """The live slot records of the first ``slots`` slots, by index."""
    found = {}
    for index in range(slots):
        record = _read(slot_path(directory, index))
        if alive(record, stale_after, clock):
            found[index] = record
    return found


def _create(path, record):
    """Create ``path`` holding ``record``, complete or not at all: written aside, then linked (fails if it exists)."""
    staging = "%s.new.%s" % (path, record["token"])
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        os.link(staging, path)
    finally:
        os.unlink(staging)


def _reclaim(path, stale_after, clock):
    """Remove the slot at ``path`` if its run is gone, under a reclaim mutex (one reclaimer at a time looks again)."""
    mutex = path + ".reclaim"
    try:
        fd = os.open(mutex, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if clock() - os.stat(mutex).st_mtime > 60:  # a reclaimer that died holding it
                os.unlink(mutex)
        return
    os.close(fd)
    try:
        # A slot that exists cannot be replaced by a taker (link fails), so what is read here is what is removed.
        record = _read(path)
        if record is not None and not alive(record, stale_after, clock):
            os.unlink(path)
    finally:
        os.unlink(mutex)


def _try(directory, slots, record, stale_after, clock):
    """Take the first free slot; return its index, or None when all ``slots`` are held."""
    for index in range(slots):
        path = slot_path(directory, index)
        seen = _read(path)
        if seen is not None and seen.get("token") == record["token"]:
            return index  # this run holds it already (a re-run of the task)
        if seen is not None and alive(seen, stale_after, clock):
            continue
        if seen is not None:
            _reclaim(path, stale_after, clock)
        try:
            _create(path, record)
            return index
        except FileExistsError:
            continue
    return None


def acquire(directory, slots, server, lock, token, wait=3600.0, stale_after=900.0,
            clock=time.time, pause=time.sleep, interval=1.0, keepalive=None, keepalive_every=300.0):
    """Take one of ``slots`` slots for the run of ``server`` holding ``lock`` with ``token``.

    Returns ``(index, waited)``. Raises naming the runs that hold every slot when none frees within ``wait``.
    ``keepalive`` (no arguments) is called every ``keepalive_every`` seconds of waiting: the run's other locks.
    """
    if slots < 1:
        raise ReplicationError("Failed to take a conversion host slot: slots must be at least 1, not %s"
                               " (set replication_host_slots to 1 or more, or 0 for no limit)" % slots)
    holder = _run_lock.read(lock, clock=clock)
    if holder is None or holder.get("token") != token:
        raise ReplicationError("Failed to take a conversion host slot for %s: its run lock %s is not held by this run"
                               " (take the server's run lock first)" % (server, lock), server=server, lock=lock)
    try:
        os.makedirs(slot_dir(directory), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ReplicationError("Failed to take a conversion host slot: cannot create %s: %s" % (slot_dir(directory), exc)) from None
    record = dict(server=server, lock=lock, token=token, taken=clock())
    started = beaten = clock()
    deadline = started + max(0.0, wait)
    while True:
        # Waiting is part of the run: keep its lock's heartbeat, so a long wait never makes it look abandoned.
        holder = _run_lock.read(lock, clock=clock)
        if holder is None or holder.get("token") != token:
            raise ReplicationError("Failed to take a conversion host slot for %s: its run lock %s was taken over while"
                                   " waiting (another run of the server started)" % (server, lock), server=server, lock=lock)
        os.utime(lock)
        index = _try(directory, slots, record, stale_after, clock)
        if index is not None:
            return index, round(clock() - started, 3)
        if clock() >= deadline:
            busy = holders(directory, slots, stale_after, clock)
            raise ReplicationError(
                "Failed to start replicating %s: all %d slots of this conversion host stayed busy for %ss (held by %s);"
                " raise replication_host_slots or replication_slot_wait, or add conversion hosts to"
                " replication_conversion_hosts. Under the linear strategy a server waiting for a slot holds back the servers"
                " in the slots, so the wait never ends: run the play with strategy free, as playbooks/replicate.yml does"
                % (server, slots, wait, ", ".join(
                    sorted(r.get("server", "?") for r in busy.values())) or "runs that just ended"),
                server=server)
        pause(max(0.0, min(interval, deadline - clock())))
        if keepalive is not None and clock() - beaten >= keepalive_every:
            keepalive()
            beaten = clock()


def would_take(directory, slots, token, stale_after):
    """The slot ``token`` holds, else the first free one, else None: what acquire would give now (check mode)."""
    held = held_by(directory, token)
    if held is not None:
        return held
    busy = holders(directory, slots, stale_after)
    return next((index for index in range(slots) if index not in busy), None)


def held_by(directory, token):
    """Index of the slot ``token`` holds, or None."""
    for index, record in _records(directory):
        if record.get("token") == token:
            return index
    return None


def _records(directory):
    try:
        names = sorted(os.listdir(slot_dir(directory)))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.endswith(".slot") and name[:-len(".slot")].isdigit():
            record = _read(os.path.join(slot_dir(directory), name))
            if record is not None:
                found.append((int(name[:-len(".slot")]), record))
    return found


def release(directory, token):
    """Free the slot ``token`` holds; return its index, or None when it holds none. Other runs' slots are untouched."""
    index = held_by(directory, token)
    if index is None:
        return None
    path = slot_path(directory, index)
    aside = "%s.release.%s" % (path, token)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    moved = _read(aside)
    if moved is not None and moved.get("token") != token:
        # Replaced between the read and the rename: put the other run's slot back.
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.unlink(aside)
        return None
    os.unlink(aside)
    return index
