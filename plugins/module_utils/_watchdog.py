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

A stage can also end after its controller is gone but before the watchdog looked. ``guarded``
then looks once more: a stage given an ``undo`` removes what it made (the object or file
nobody will catalogue) and ends as stopped, so the locks go with it instead of going stale.
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

    def silent_now(self):
        """Look once more (a stage that ended between two looks): mark the dog fired when the heartbeat is silent."""
        if self.silence() > self.abandon_after:
            self.fired.set()
        return self.fired.is_set()

    def release_stale(self):
        """Remove the heartbeat file when it is still silent (the lock of the controller that is gone)."""
        if self.silence() > self.abandon_after:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
                return True
        return False


@contextlib.contextmanager
def guard(params, what, check_mode=False, undo=None):
    """Run the body under a watchdog of ``params['heartbeat_file']``; a stop for silence fails naming why.

    ``undo()`` runs on such a stop, after the body's own cleanup: it removes what a body that had already finished
    made (see ``guarded``); a ReplicationError from it is said in the message instead of "its work is cleaned up".
    """
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
        left = None
        try:
            if undo is not None:
                undo()
        except ReplicationError as exc:
            left = exc.msg
        released = dog.release_stale()
        in_bucket = release_bucket_lock(params) if released else None
        raise ReplicationError(
            "Failed to %s: stopped itself after nobody followed it for %.0f s (abandon_after; its controller died or was"
            " cancelled): %s%s%s; run the replication again" % (
                what, after, left or "its work is cleaned up", ", the run lock %s released" % path if released else "",
                " and %s" % in_bucket if in_bucket else ""),
            abandoned=True) from None
    finally:
        dog.stop()


def guarded(action, verb, target="key", undo=None):
    """``action(module)`` under ``guard``: what a stage module passes to ReplicationModule.run.

    ``undo(module, result)`` removes what a finished ``action`` made. It runs when the stage ended after nobody
    followed it any more: its result would reach nobody, its object would stay uncatalogued and its locks would
    wait to go stale, so the stage ends as stopped instead.
    """
    def run(module):
        done = {}

        def undo_done():
            if "result" in done:
                undo(module, done["result"])
        with guard(module.params, "%s %s" % (verb, module.params.get(target) or ""), check_mode=module.check_mode,
                   undo=undo_done if undo is not None else None) as dog:
            done["result"] = action(module)
            if undo is not None and dog is not None:
                dog.stop()  # a SIGTERM it already sent surfaces here, as the stop it is
                if dog.silent_now():  # it ended between two looks of the dog
                    raise ReplicationError("ended after its controller was gone")
            return done["result"]
    return run


def undo_object(module, result):
    """``undo`` of an upload stage: delete the object it wrote (only when this run wrote it)."""
    if not result.get("changed"):
        return
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos
    params = module.params
    try:
        _cos.connect(params["cos"]).delete_object(Bucket=params["bucket"], Key=params["key"])
    except (_cos.ClientError, _cos.BotoCoreError) as exc:
        raise ReplicationError("it could not delete s3://%s/%s, written when nobody followed it any more (%s); delete it by hand or"
                               " with playbooks/cleanup.yml" % (params["bucket"], params["key"], _cos.error_code(exc) or exc)) from None


def undo_file(module, result):
    """``undo`` of a conversion stage: remove the file it wrote (only when this run wrote it)."""
    if result.get("changed"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(module.params["dest"])
