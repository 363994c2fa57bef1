# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A stage does not outlive its controller: kill -9 of ansible-playbook mid-upload, the async stage stops itself
within replication_abandon_after (upload aborted, lock released), and a re-run completes with nothing orphaned."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.replication import PLAYBOOK, summary
from tests.integration.test_resume import parts_of, upload_results
from tests.integration.test_run_lock import SERVER, gated, lock_disk, sites, wait_for  # noqa: F401  # pylint: disable=unused-import
from tests.peers.runner import COLLECTIONS, ROOT, VENV_BIN

# Short, yet several times the gap between two polls of a live controller (each poll an ansible task): with parallel
# test workers on two busy cores that gap reaches seconds, and at 3 s a live controller's stage gave up mid-run.
ABANDON_AFTER = 10


def controller(site, **extra_vars):
    """ansible-playbook itself (its own session, so that kill -9 takes the whole controller), as a user starts it."""
    site.write_cos_file()
    inventory = os.path.join(site.root, "inventory.json")
    with open(inventory, "w") as handle:
        json.dump(site.inventory(**extra_vars), handle)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_ASYNC_DIR=site.async_dir,
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    log = open(os.path.join(site.root, "controller.log"), "wb")  # noqa: SIM115 - closed by the caller's kill
    return subprocess.Popen([os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, PLAYBOOK], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log


def descendants(root):
    children = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stage_processes(marker):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def kill_controller_mid_upload(site, gated):
    """Start ansible-playbook, and kill -9 it and all its workers once the stage's upload waits at the gate; the kill's time."""
    proc, log = controller(site)
    try:
        assert gated.held.wait(120), open(log.name).read()
        lock = os.path.join(site.work_dir, "%s.lock" % SERVER)
        assert os.path.exists(lock) and site.multipart_uploads()
        # The whole controller: ansible-playbook and its workers (each in a session of its own, polling the stage).
        for pid in [proc.pid] + descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        log.close()
        os.unlink(site.cos_file)
    return time.monotonic()


def rerun_completes(site, marker):
    """The next run replicates the server, and nothing is left: no orphan object, upload, process (``marker``) or file."""
    run = site.run()
    assert run.status == "successful", run.stdout
    assert summary(run)[SERVER]["status"] == "replicated"
    assert len(site.catalog(SERVER)["images"]) == 1
    assert site.orphans() == [] and site.multipart_uploads() == []
    assert not stage_processes(marker)
    left = site.leftovers()
    left.pop("async", None)  # the stopped controller's job file: it never collected it
    assert left == {}, left
    return run


CASES = [pytest.param("rclone", "stream", id="rclone-stream"), pytest.param("seaweedfs", "staged", id="seaweedfs-staged")]


@pytest.mark.parametrize("s3_server, data_path", CASES, indirect=["s3_server"])
def test_kill_9_of_the_controller_the_stage_stops_itself(tmp_path, s3_server, gated, lock_disk, data_path):
    site, _second = sites(tmp_path, s3_server, gated, lock_disk, replication_abandon_after=ABANDON_AFTER, replication_data_path=data_path)
    killed = kill_controller_mid_upload(site, gated)
    lock = os.path.join(site.work_dir, "%s.lock" % SERVER)
    # The endpoint stays slow past abandon_after (else the orphaned stage could simply finish), then lets the parts in flight end.
    time.sleep(ABANDON_AFTER + 2)
    gated.gate.set()
    # The stage notices within abandon_after (plus its check interval) and cleans up: upload aborted, lock released.
    wait_for(lambda: not os.path.exists(lock) and not site.multipart_uploads(), timeout=ABANDON_AFTER + 60)
    stopped = time.monotonic() - killed
    assert stopped < ABANDON_AFTER + 30, stopped
    wait_for(lambda: not stage_processes(site.work_dir), timeout=30)
    assert site.catalog(SERVER) is None

    rerun_completes(site, site.work_dir)


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_kill_9_keeps_the_upload_when_asked_and_the_rerun_resumes_it(tmp_path, s3_server, gated, lock_disk):
    site, _second = sites(tmp_path, s3_server, gated, lock_disk, replication_abandon_after=ABANDON_AFTER,
                          replication_keep_incomplete_uploads=True)
    kill_controller_mid_upload(site, gated)
    lock = os.path.join(site.work_dir, "%s.lock" % SERVER)
    time.sleep(ABANDON_AFTER + 2)
    gated.gate.set()
    # The stage stops itself and releases the lock, but keeps its upload (with the parts that were in flight) for the next run.
    wait_for(lambda: not os.path.exists(lock), timeout=ABANDON_AFTER + 60)
    wait_for(lambda: not stage_processes(site.work_dir), timeout=30)
    uploads = site.multipart_uploads()
    assert len(uploads) == 1 and parts_of(site, uploads[0]), uploads
    assert site.catalog(SERVER) is None and site.orphans() == []

    run = rerun_completes(site, site.work_dir)
    assert upload_results(run)[-1]["resumed_parts"] > 0, upload_results(run)
