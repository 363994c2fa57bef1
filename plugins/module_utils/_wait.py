# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One bounded waiter on the monotonic clock."""

from __future__ import annotations

import time

from ansible_collections.vmimage.replication.plugins.module_utils._errors import FailedState, WaitTimeout


def wait_until(probe, timeout, sleep=2.0, failure_states=(), what="resource", clock=time.monotonic, pause=time.sleep):
    """Call ``probe()`` until it returns ``(True, state)``; return that state.

    ``probe`` returns ``(ready, state)``. A ``state`` found in ``failure_states``
    (compared as a string, or ``state["status"]`` for dicts) raises FailedState at
    once instead of waiting out the timeout. Running out of time raises
    WaitTimeout carrying the last state seen.
    """
    deadline = clock() + timeout
    while True:
        ready, state = probe()
        status = state.get("status") if isinstance(state, dict) else state
        if ready:
            return state
        if status in failure_states:
            raise FailedState("%s reached failure state %r" % (what, status), state=state)
        remaining = deadline - clock()
        if remaining <= 0:
            raise WaitTimeout(
                "Timed out after %ss waiting for %s; last state: %r" % (timeout, what, status),
                last_state=state,
            )
        pause(min(sleep, remaining))
