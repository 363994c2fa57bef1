# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/powervc_import.yml cancelled through ansible-runner's cancel_callback while the PowerVS import job runs.

ansible-runner kills ansible-playbook, so no ``always:`` runs. It still ends clean: the session directory went as
soon as the OVA was in the bucket, the upload is complete (no multipart upload left), and the import's follower
(an ``async`` task that outlives the playbook) stops once nobody polls it for ``powervc_host_abandon_after``
seconds, follows the job PowerVS cannot stop to its end and deletes the image it made: the catalog is unchanged.
"""

from __future__ import annotations

import json
import os
import time

from tests.integration.test_abandoned_stage import stage_processes
from tests.integration.test_powervc_import import PLAYBOOK, bed, pvc_ssh, pvc_user, pvs  # noqa: F401 pylint: disable=unused-import
from tests.peers.runner import run_playbook


def _wait(predicate, bound=90.0):
    """Poll ``predicate`` until true, at most ``bound`` seconds (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def _progress(private):
    """The import's progress record (powervc-import-*.json in the run's scratch dir), {} before there is one."""
    scratch = os.path.join(private, "tmp")
    for name in os.listdir(scratch):
        if name.startswith("powervc-import-") and name.endswith(".json"):
            with open(os.path.join(scratch, name), encoding="utf-8") as handle:
                return json.load(handle)
    return {}


def _command_line(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return "(gone)"


def _follower_results(private):
    """What the async follower wrote as its result (ansible's async status files in the run's private dir)."""
    found = {}
    for root, _dirs, files in os.walk(os.path.join(private, "tmp", "async")):
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
                found[name] = handle.read()[-2000:]
    return found


def test_cancel_while_the_import_job_runs_ends_clean(bed):  # noqa: F811
    emulator = bed.emulator
    saved = (emulator.running_seconds, emulator.progress_steps)
    emulator.running_seconds, emulator.progress_steps = 600.0, 300  # the job runs until the test lets it finish
    seen = {}

    def cancel():
        running = [j for j in bed.ws.jobs.values() if j["status"]["state"] == "running"]
        if running and "job" not in seen:
            seen["job"] = running[0]
        return bool(running)

    try:
        private = str(bed.tmp_path / "runner-cancel")
        os.makedirs(private)
        # The follower's wait is bounded by the import timeout: generous here, so a slow machine does not end the follow.
        extravars = bed.extravars(powervc_host_abandon_after=3, powervc_host_poll_wait=0.3, powervc_host_import_timeout=900)
        run = run_playbook(PLAYBOOK, bed.inventory, extravars=extravars, private_dir=private, cancel_callback=cancel)
        run.private_dir = private
        assert run.status == "canceled", run.status
        job = seen["job"]
        assert job["status"]["state"] == "running"
        # Nothing was left on the PowerVC host or in the bucket's uploads when the cancel came.
        assert os.listdir(bed.host.sessions) == [] and bed.uploads() == []
        assert stage_processes(private), "no follower of the import job outlived the controller"
        # The follower stops itself once nobody has polled it for abandon_after seconds; only then may the job end.
        assert _wait(lambda: _progress(private).get("state") == "cancelled"), _progress(private)
        emulator.running_seconds = 0.5  # PowerVS finishes the job it could not stop
        assert _wait(lambda: job["status"]["state"] in ("completed", "failed"))
        # Neither the follower nor the worker that polled it (its own session: the kill of the process group missed it).
        assert _wait(lambda: not stage_processes(private)), [_command_line(pid) for pid in stage_processes(private)]
        # The image the job made was deleted: the catalog is as it was.
        assert bed.ws.images == {}, (bed.ws.images, _follower_results(private))
        assert os.listdir(bed.host.sessions) == [] and bed.uploads() == []
        # The abandoned follower removed the silent heartbeat file; what the killed controller could not remove (the
        # progress record) is in the run's own scratch directory, which ansible-runner's caller removes with the run.
        left = sorted(n for n in os.listdir(os.path.join(private, "tmp")) if n.startswith("powervc-import-"))
        assert [n.rsplit(".", 1)[1] for n in left] == ["json"], left
    finally:
        emulator.running_seconds, emulator.progress_steps = saved
        for pid in stage_processes(str(bed.tmp_path / "runner-cancel")):
            os.kill(pid, 9)
