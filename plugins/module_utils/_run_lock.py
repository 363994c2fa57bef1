# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One run per server: a lock file on the host where the run's state lives.

The lock is ``<dir>/<server>.lock``, created with ``O_EXCL`` (atomic on a local file
system), holding JSON: the owner token, the controller host, its pid, the start time.
Its modification time is the heartbeat: the run touches it (job_progress does, every
poll). A lock whose heartbeat is older than ``stale_after`` seconds belongs to a run
that is gone; it is taken over by renaming it aside first (only one taker wins the
rename) and checking that what was renamed was indeed stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def lock_path(directory, server):
    if not server or "/" in server or server.startswith("."):
        raise ReplicationError("Failed to lock server %r: not a usable server name" % (server,))
    return os.path.join(os.path.expanduser(directory), "%s.lock" % server)


def new_token():
    return uuid.uuid4().hex


def read(path, clock=time.time):
    """Return the holder of the lock at ``path`` (with ``age``, seconds since its heartbeat), or None."""
    try:
        with open(path) as handle:
            text = handle.read()
            stat = os.fstat(handle.fileno())
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    if not isinstance(holder, dict):
        holder = {}
    holder["age"] = max(0.0, clock() - stat.st_mtime)
    return holder


def stamp_path(path):
    """The stamp of the bucket heartbeat sent for the host lock at ``path`` (see beat_due)."""
    return path + ".bucket-beat"


def _drop_stamp(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamp_path(path))


def held_error(server, holder, where, wait, stale_after):
    """The failure of a run that finds ``server``'s lock (at ``where``) held by another run."""
    return ReplicationError(
        "Failed to start replicating %s: another %s holds its lock %s; wait for it to end, or let this run wait"
        " for it with replication_lock_wait (now %ss; a lock whose heartbeat is older than"
        " replication_lock_stale_after=%ss is taken over)" % (server, describe(holder), where, wait, stale_after),
        server=server, lock=where)


def describe(holder):
    return "run %s from %s (pid %s, started %s, last heartbeat %.0f s ago)" % (
        holder.get("token", "?"), holder.get("host", "?"), holder.get("pid", "?"),
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder["started"])) if isinstance(holder.get("started"), (int, float)) else "?",
        holder.get("age", 0.0))


def _create(path, record):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)


def _take_stale(path, stale_after, clock):
    """Remove a stale lock under a take-over mutex (``<lock>.takeover``, O_EXCL): only one taker at a time
    looks again and removes it, so a fresh lock made by another taker is never removed."""
    mutex = path + ".takeover"
    try:
        _create(mutex, {})
    except FileExistsError:
        holder = read(mutex, clock=clock)
        if holder is not None and holder["age"] > 60:  # a taker that died holding it
            with contextlib.suppress(FileNotFoundError):
                os.unlink(mutex)
        return False
    try:
        holder = read(path, clock=clock)
        if holder is not None and holder["age"] > stale_after:
            os.unlink(path)
        return True
    finally:
        os.unlink(mutex)


def _settle(path, aside, keep_removed):
    """Finish a rename aside: drop the file, or first put it back under ``path`` (unless a new lock is there)."""
    if not keep_removed:
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    os.unlink(aside)
    return keep_removed


def acquire(directory, server, token, stale_after=900.0, wait=0.0, controller=None, pid=None,
            clock=time.time, pause=time.sleep, interval=1.0):
    """Take the lock of ``server``; return ``(changed, holder)``. Raise naming the other run when it stays held."""
    path = lock_path(directory, server)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ReplicationError("Failed to lock server %s: cannot create %s: %s" % (server, os.path.dirname(path), exc)) from None
    record = dict(token=token, host=controller or socket.gethostname(), pid=pid or os.getpid(), started=clock(), server=server)
    deadline = clock() + max(0.0, wait)
    while True:
        holder = read(path, clock=clock)
        if holder is not None and holder.get("token") == token:
            heartbeat(directory, server, token)
            return False, holder
        if holder is None or holder["age"] > stale_after:
            if holder is not None:
                _take_stale(path, stale_after, clock)
            try:
                _create(path, record)
                _drop_stamp(path)  # one left by a run that is gone
                record["age"] = 0.0
                return True, record
            except FileExistsError:
                continue
            except OSError as exc:
                raise ReplicationError("Failed to lock server %s: cannot create %s: %s" % (server, path, exc)) from None
        if clock() >= deadline:
            raise held_error(server, holder, path, wait, stale_after)
        pause(max(0.0, min(interval, deadline - clock())))


def heartbeat(directory, server, token):
    """Touch the lock when ``token`` holds it; return whether it does."""
    path = lock_path(directory, server)
    holder = read(path)
    if holder is None or holder.get("token") != token:
        return False
    os.utime(path)
    return True


def release(directory, server, token):
    """Remove the lock when ``token`` holds it; return whether it was removed. Another run's lock is never touched."""
    path = lock_path(directory, server)
    holder = read(path)
    if holder is None or holder.get("token") != token:
        return False
    aside = "%s.release.%s" % (path, token)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    _drop_stamp(path)
    # Replaced between the read and the rename: put the other run's lock back.
    return _settle(path, aside, (read(aside) or {}).get("token") == token)


def beat_due(stamp, every, clock=time.time):
    """Whether the bucket heartbeat is due: the stamp file (touched at each one) is missing or older than ``every`` seconds."""
    try:
        return clock() - os.stat(stamp).st_mtime >= every
    except FileNotFoundError:
        return True


def stamp_beat(stamp):
    """Note that the bucket heartbeat was sent (the stamp file lives beside the host lock, removed with it)."""
    with open(stamp, "a"):
        pass
    os.utime(stamp)
