# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""AWX's cancel of a running replicate: SIGINT to ansible-playbook's process group, then SIGKILL after a grace period.

It ends as a kill -9 and a runner cancel do: the stage stops itself within replication_abandon_after, the run lock is
released, the multipart upload is aborted (or kept with replication_keep_incomplete_uploads), no process or file of the
run is left, and a re-run completes (resuming the kept upload).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time

import pytest

from tests.integration.test_abandoned_stage import controller, descendants, rerun_completes, stage_processes
from tests.integration.test_cancel import silence
from tests.integration.test_resume import parts_of, upload_results
from tests.integration.test_run_lock import SERVER, gated, lock_disk, sites, wait_for  # noqa: F401  # pylint: disable=unused-import

# AWX waits this long after SIGINT before it sends SIGKILL (a short one here: the test is about what happens after).
GRACE = 2.0
# Roomier than the kill -9 tests': on a busy machine a re-run's first poll may come seconds after its stage started.
ABANDON_AFTER = 8


def awx_cancel(site, gated):
    """Start ansible-playbook; once the stage uploads, SIGINT its process group, SIGKILL what is left after GRACE.

    Returns the time of the SIGINT and the processes the SIGKILL found still running.
    """
    proc, log = controller(site)
    try:
        assert gated.held.wait(400), open(log.name).read()  # a busy machine makes the steps before the stage slow
        assert os.path.exists(os.path.join(site.work_dir, "%s.lock" % SERVER)) and site.multipart_uploads()
        group = os.getpgid(proc.pid)
        cancelled = time.monotonic()
        os.killpg(group, signal.SIGINT)
        with contextlib.suppress(Exception):
            proc.wait(GRACE)
        survivors = [pid for pid in [proc.pid] + descendants(proc.pid) if _in_group(pid, group)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:  # a failed step above: the controller must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.wait(30)
        log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(site.cos_file)
    return cancelled, survivors


def _in_group(pid, group):
    try:
        return os.getpgid(pid) == group
    except ProcessLookupError:
        return False


CASES = [
    pytest.param("rclone", False, id="rclone-aborted"),
    pytest.param("seaweedfs", True, id="seaweedfs-kept"),
]


@pytest.mark.parametrize("s3_server, keep", CASES, indirect=["s3_server"])
def test_awx_cancel_sigint_then_sigkill_ends_clean(tmp_path, s3_server, gated, lock_disk, keep):
    site, _second = sites(tmp_path, s3_server, gated, lock_disk, replication_abandon_after=ABANDON_AFTER,
                          replication_keep_incomplete_uploads=keep)
    lock = os.path.join(site.work_dir, "%s.lock" % SERVER)
    cancelled, survivors = awx_cancel(site, gated)
    print("still running after SIGINT + %.0f s grace: %d processes of the group" % (GRACE, len(survivors)))
    # The endpoint stays slow until the stage has gone unfollowed past abandon_after (else it could simply finish): the
    # lock silent that long, and the cancel that long ago (the lock may have been silent since before the stage began,
    # whose watchdog counts from its own start). Then the parts in flight may end.
    wait_for(lambda: min(silence(lock), time.monotonic() - cancelled) > ABANDON_AFTER + 2, timeout=120)
    gated.gate.set()
    wait_for(lambda: not os.path.exists(lock), timeout=ABANDON_AFTER + 60)
    if not keep:
        wait_for(lambda: not site.multipart_uploads(), timeout=30)
    stopped = time.monotonic() - cancelled
    assert stopped < ABANDON_AFTER + 60, stopped
    print("stage stopped %.1f s after the SIGINT" % stopped)
    wait_for(lambda: not stage_processes(site.root), timeout=30)
    uploads = site.multipart_uploads()
    if keep:
        assert len(uploads) == 1 and parts_of(site, uploads[0]), uploads
    else:
        assert uploads == []
    assert site.catalog(SERVER) is None and site.orphans() == []

    # The re-run with the role's default abandon_after: on a busy machine its first poll may come more than ABANDON_AFTER
    # seconds after its stage started (seen here at a load average of 20), which would stop that stage too.
    rerun = dataclasses.replace(site, extra={name: value for name, value in site.extra.items() if name != "replication_abandon_after"})
    run = rerun_completes(rerun, site.root)
    if keep:
        assert upload_results(run)[-1]["resumed_parts"] > 0, upload_results(run)
