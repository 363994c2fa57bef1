# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A stage does not outlive its controller.

A long stage runs with ``async``; its controller polls it with job_progress, which touches a
heartbeat file (the run lock) at every poll. ``guard`` watches that file from a background
thread: when nobody has touched it for ``abandon_after`` seconds it sends SIGTERM to its own
process, which ``_errors.terminate_as_error`` turns into a ReplicationError, so the stage
cleans up exactly as on a cancel (the multipart upload aborted unless kept, the spool
removed). When the error has gone through the stage's cleanup, the heartbeat file (the lock
of the controller that is gone) is removed if nobody touched it meanwhile, and with it the
run's lock in the bucket when the stage was given it (``bucket_lock``; stages that reach the
bucket), so that no run waits for that lock to go stale.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, terminate_as_error

SPEC = dict(heartbeat_file=dict(type="path"), abandon_after=dict(type="float"),
            bucket_lock=dict(type="dict", options=dict(bucket=dict(type="str", required=True), key=dict(type="str", required=True, no_log=False),
                                                       token=dict(type="str", required=True, no_log=False))))


def release_bucket_lock(params):
    """Release the run's lock in the bucket (``params['bucket_lock']``, reached with ``params['cos']``); return its URL or None.

    Only the lock of ``token`` is removed; a lock another run took meanwhile stays. A failure to reach the bucket is
    not raised: that lock then goes stale and is taken over (replication_lock_stale_after).
    """
    lock, cos = params.get("bucket_lock"), params.get("cos")
    if not lock or not cos:
        return None
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos
    try:
        if _bucket_lock.release(_cos.connect(cos), lock["bucket"], lock["key"], lock["token"]):
            return "s3://%s/%s" % (lock["bucket"], lock["key"])
    except (ReplicationError, _cos.ClientError, _cos.BotoCoreError, OSError):  # the stale rule covers a lock left
        pass
    return None


def last_beat(path, started):
    """The later of ``started`` and the file's modification time (None when the file is gone)."""
    try:
        return max(started, os.stat(path).st_mtime)
    except FileNotFoundError:
        return None


class Watchdog:
    """Background thread: ``fired`` is set (and ``fire()`` called) once the heartbeat is older than ``abandon_after``."""

    def __init__(self, path, abandon_after, fire=None, clock=time.time, interval=None):
        self.path = path
        self.abandon_after = float(abandon_after)
        self.clock = clock
        self.started = clock()
        self.interval = interval if interval is not None else max(0.2, min(5.0, self.abandon_after / 10))
        self.fire = fire or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="heartbeat-watchdog", daemon=True)

    def silence(self):
        """Seconds since the last heartbeat (a missing file counts as silent since the start)."""
        beat = last_beat(self.path, self.started)
        return self.clock() - (self.started if beat is None else beat)

    def _watch(self):
        while not self._stop.wait(self.interval):
            if self.silence() > self.abandon_after:
                self.fired.set()
                self.fire()
                return

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.interval + 1)

    def release_stale(self):
        """Remove the heartbeat file when it is still silent (the lock of the controller that is gone)."""
        if self.silence() > self.abandon_after:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
                return True
        return False


@contextlib.contextmanager
def guard(params, what, check_mode=False):
    """Run the body under a watchdog of ``params['heartbeat_file']``; a stop for silence fails naming why."""
    path, after = params.get("heartbeat_file"), params.get("abandon_after")
    if check_mode or not path or not after or after <= 0:
        yield None
        return
    dog = Watchdog(path, after).start()
    try:
        with terminate_as_error(what):
            yield dog
            dog.stop()  # before the handler goes: a late SIGTERM of its own must not kill a finished stage
    except ReplicationError:
        dog.stop()
        if not dog.fired.is_set():
            raise
        released = dog.release_stale()
        in_bucket = release_bucket_lock(params) if released else None
        raise ReplicationError(
            "Failed to %s: stopped itself after nobody followed it for %.0f s (abandon_after; its controller died or was"
            " cancelled): its work is cleaned up%s%s; run the replication again" % (
                what, after, ", the run lock %s released" % path if released else "", " and %s" % in_bucket if in_bucket else ""),
            abandoned=True) from None
    finally:
        dog.stop()


def guarded(action, verb, target="key"):
    """``action(module)`` under ``guard``: what a stage module passes to ReplicationModule.run."""
    def run(module):
        with guard(module.params, "%s %s" % (verb, module.params.get(target) or ""), check_mode=module.check_mode):
            return action(module)
    return run
