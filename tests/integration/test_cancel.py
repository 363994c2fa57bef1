# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""ansible-runner's cancel_callback mid-upload ends as a kill -9 of the controller does: the stage stops itself within
replication_abandon_after (upload aborted, lock released), nothing of the run is left running, and a re-run completes."""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.test_abandoned_stage import ABANDON_AFTER, rerun_completes, stage_processes
from tests.integration.test_run_lock import SERVER, gated, lock_disk, sites, start, wait_for  # noqa: F401  # pylint: disable=unused-import


def silence(path):
    """Seconds since the last heartbeat of the lock at ``path`` (infinite once it is gone)."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


# One S3 server: the abort of an upload whose run is gone is tested on both by the kill -9 and AWX-cancel tests.
@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_runner_cancel_mid_upload_ends_clean(tmp_path, s3_server, gated, lock_disk):
    site, _second = sites(tmp_path, s3_server, gated, lock_disk, replication_abandon_after=ABANDON_AFTER)
    lock = os.path.join(site.work_dir, "%s.lock" % SERVER)
    asked = {}

    def cancel():
        # Once the stream stage is uploading (a part waits at the gate), the management app cancels the job.
        if gated.held.is_set() and os.path.exists(lock):
            asked.setdefault("at", time.monotonic())
            return True
        return False

    thread, box = start(site, cancel_callback=cancel)
    thread.join(300)
    assert not thread.is_alive(), "the canceled run did not return"
    assert "at" in asked, box["run"].stdout
    assert box["run"].status == "canceled", box["run"].stdout
    # The canceled controller's worker may poll a few seconds more (it runs in a session of its own): the endpoint stays
    # slow until the heartbeat has been silent past abandon_after (else the stage could simply finish), then lets the parts end.
    # The margin is the watchdog's time to fire: it checks every second, but on a loaded machine (seen in a full parallel
    # run) it fired after the gate had opened at +1 s, so the stage simply finished and its lock stayed.
    wait_for(lambda: silence(lock) > ABANDON_AFTER + 6, timeout=120)
    gated.gate.set()
    wait_for(lambda: not os.path.exists(lock) and not site.multipart_uploads(), timeout=ABANDON_AFTER + 60)
    stopped = time.monotonic() - asked["at"]
    assert stopped < ABANDON_AFTER + 30, stopped
    print("stage stopped %.1f s after the cancel" % stopped)
    # Neither the stage nor any process of the canceled controller (its workers name the runner dir under site.root).
    wait_for(lambda: not stage_processes(site.root), timeout=30)
    assert site.catalog(SERVER) is None and site.orphans() == []

    rerun_completes(site, site.root)
