# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One run per server, through ansible-runner: a second run while the first streams fails clearly (or waits)
and touches nothing of the first; two controllers at once make exactly one image.

The first run is held mid-upload deterministically: a proxy in front of the real S3 server (tests/peers/faulty_s3.py)
keeps every UploadPart waiting until the test opens its gate.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from tests.integration.replication import build_disk, make_site, summary
from tests.peers.faulty_s3 import FaultyS3

SERVER = "web01"


class GatedS3(FaultyS3):
    """FaultyS3 whose UploadPart requests wait for ``gate`` (set: they pass); ``held`` is set once one waits."""

    def __init__(self, upstream):
        super().__init__(upstream)
        self.gate = threading.Event()
        self.held = threading.Event()

    def _decide(self, part_number):
        self.held.set()
        if not self.gate.wait(120):
            raise TimeoutError("the test never opened the gate")
        return super()._decide(part_number)


@pytest.fixture(scope="module")
def lock_disk(tmp_path_factory):
    return build_disk(str(tmp_path_factory.mktemp("lock") / "disk.img"), size="64M", fill=0.5)


@pytest.fixture
def gated(s3_server):
    proxy = GatedS3(s3_server.endpoint)
    with proxy:
        try:
            yield proxy
        finally:
            proxy.gate.set()


def sites(tmp_path, s3_server, gated, disk, **extra):
    """Two controllers' sites (own runner dirs, keys files and async dirs) sharing the conversion host's work and snapshot dirs."""
    options = dict(replication_part_size_mb=5, replication_threads=1, replication_deflate_library="zlib", replication_data_path="stream",
                   replication_cos=dict(endpoint=gated.endpoint, region=s3_server.region))
    options.update(extra)
    # Polls (each one touches the lock) every 2 s: well inside the abandon_after of the kill and cancel tests (8-10 s).
    first = make_site(tmp_path / "a", s3_server, [disk], [SERVER], poll_wait=2, extra=options)
    shared = dict(options, replication_work_dir=first.work_dir, replication_snapshot_dir=first.snapshot_dir)
    os.makedirs(tmp_path / "b")
    second = dataclasses.replace(first, root=str(tmp_path / "b"), extra=shared)
    return first, second


def start(site, **extra_vars):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("run", site.run(**extra_vars)), daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_second_run_fails_at_once_and_touches_nothing_of_the_first(tmp_path, s3_server, gated, lock_disk):
    first, second = sites(tmp_path, s3_server, gated, lock_disk)
    thread, box = start(first)
    assert gated.held.wait(120), "the first run never started its upload"
    lock = os.path.join(first.work_dir, "%s.lock" % SERVER)
    assert os.path.exists(lock)
    run_dirs = sorted(name for name in os.listdir(first.work_dir) if not name.endswith(".lock"))
    snapshots = sorted(os.listdir(first.snapshot_dir))
    uploads = first.multipart_uploads()
    assert run_dirs and snapshots and len(uploads) == 1

    run = second.run()
    assert run.status == "failed", run.stdout
    error = summary(run)[SERVER]["error"]
    assert "Failed to start replicating %s: another run" % SERVER in error, error
    assert lock in error and "replication_lock_wait" in error, error
    # Nothing of the first run was touched: its lock, run directory, snapshot and multipart upload are all there.
    assert sorted(name for name in os.listdir(first.work_dir) if not name.endswith(".lock")) == run_dirs
    assert sorted(os.listdir(first.snapshot_dir)) == snapshots
    assert [u["UploadId"] for u in first.multipart_uploads()] == [u["UploadId"] for u in uploads]
    assert os.path.exists(lock)

    gated.gate.set()
    thread.join(300)
    assert box["run"].status == "successful", box["run"].stdout
    result = summary(box["run"])[SERVER]
    assert result["status"] == "replicated", result
    assert [image["key"] for image in first.catalog(SERVER)["images"]] == [result["key"]]
    assert first.leftovers() == {}
    assert second.leftovers() == {}


@pytest.mark.parametrize("s3_server", ["seaweedfs"], indirect=True)
def test_two_controllers_at_once_make_one_image(tmp_path, s3_server, gated, lock_disk):
    first, second = sites(tmp_path, s3_server, gated, lock_disk, replication_lock_wait=240)
    threads = [start(first), start(second)]
    assert gated.held.wait(120), "no run started its upload"
    time.sleep(1.0)  # the other run is waiting for the lock by now (or about to)
    gated.gate.set()
    for thread, _box in threads:
        thread.join(400)
    runs = [box["run"] for _thread, box in threads]
    assert [run.status for run in runs] == ["successful", "successful"], [run.stdout for run in runs]
    statuses = sorted(summary(run)[SERVER]["status"] for run in runs)
    assert statuses == ["replicated", "unchanged"], [summary(run) for run in runs]
    catalog = first.catalog(SERVER)
    assert len(catalog["images"]) == 1, catalog
    assert [name for name in first.objects() if name.endswith(".qcow2")] == [catalog["images"][0]["key"]]
    assert first.leftovers() == {}
    assert second.leftovers() == {}
