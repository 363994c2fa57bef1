# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Typed errors raised by the collection's utils; only the module wrapper turns them into fail_json."""

from __future__ import annotations

import contextlib
import signal
import threading


class ReplicationError(Exception):
    """An operation failed; ``msg`` reads "Failed to <verb> <resource> <name>: <cause>".

    ``details`` are extra keys returned beside ``msg`` (never secrets).
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def extend_msg(self, note, joiner="; "):
        """Append ``note`` (say, what a cleanup after this failure could not do) to the message, keeping the error itself."""
        self.msg = "%s%s%s" % (self.msg, joiner, note)
        self.args = (self.msg,)


class MissingDependency(ReplicationError):
    """A program or Python library the module needs is not installed."""


class WaitTimeout(ReplicationError):
    """A bounded wait ran out; carries the last state it saw."""

    def __init__(self, msg, last_state=None, **details):
        super().__init__(msg, last_state=last_state, **details)
        self.last_state = last_state


class FailedState(ReplicationError):
    """A resource reached a state from which it will not become ready."""

    def __init__(self, msg, state=None, **details):
        super().__init__(msg, state=state, **details)
        self.state = state


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


@contextlib.contextmanager
def terminate_as_error(what):
    """Turn SIGTERM (a cancelled job: ansible-runner, AWX) into a ReplicationError, so cleanup runs and the task fails cleanly.

    An async timeout sends SIGKILL, which nothing can catch: the next run removes what it left.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    except _Terminated:
        raise ReplicationError("Failed to %s: interrupted by SIGTERM (the job was cancelled); run the task again" % what) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
