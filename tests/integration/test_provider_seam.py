"""The role through the provider seam: provider options reach the adapter (local, loop devices), the data path reads
the attached device, and the always: section detaches it, whatever happens."""

from __future__ import annotations

import glob
import os
import struct
import subprocess

import pytest

from tests.integration.replication import build_disk, changed_count, make_site, qemu_compare, summary

ATTACH = "Attach a volume from the snapshot to the conversion host"
DETACH = "Detach and delete the volume made from the snapshot"


def loops_under(root):
    """Loop devices whose backing file lies under ``root``."""
    found = []
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        with open(backing, encoding="utf-8") as handle:
            if handle.read().strip().startswith(str(root)):
                found.append(backing.split("/")[3])
    return found


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    return build_disk(str(tmp_path_factory.mktemp("seam") / "s.img"), size="48M", fill=0.4)


@pytest.fixture
def loop_ok():
    if os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0:
        pytest.skip("loop devices need root and a free /dev/loopN")


def test_loop_provider_option_reads_a_loop_device_and_detaches_it(tmp_path, s3_rclone, small_disk, loop_ok):
    site = make_site(tmp_path, s3_rclone, [small_disk], ["web01"], extra=dict(replication_provider_options={"loop": True}))

    run = site.run(check=True)
    assert run.status == "successful", run.stdout
    assert summary(run)["web01"]["status"] == "would-replicate"
    assert site.objects() == {} and site.leftovers() == {} and loops_under(tmp_path) == []

    run = site.run()
    assert run.status == "successful", run.stdout
    result = summary(run)["web01"]
    assert result["status"] == "replicated" and result["key"].startswith("images/web01/")
    attached = run.task_results(ATTACH)
    assert len(attached) == 1 and attached[0]["attachment"]["device"].startswith("/dev/loop"), attached
    assert run.task_results(DETACH)[0]["changed"] is True
    assert loops_under(tmp_path) == [] and site.leftovers() == {}
    image = site.download(result["key"], str(tmp_path / "image.qcow2"))
    assert qemu_compare(site.disks["web01"], image).returncode == 0

    # unchanged: the same answer, nothing made or attached
    run = site.run()
    assert run.status == "successful", run.stdout
    assert summary(run)["web01"]["status"] == "unchanged" and changed_count(run) == 0
    assert run.task_results(ATTACH) == []

    # a failure after the attach (a damaged qcow2: the conversion of the device fails) still detaches, and leaves nothing
    with open(site.disks["web01"], "wb") as handle:
        handle.write(b"QFI\xfb" + struct.pack(">I", 3) + b"\xff" * 64 + b"\0" * (1 << 20))
    run = site.run()
    assert run.status == "failed"
    result = summary(run)["web01"]
    assert result["status"] == "failed" and result["error"].startswith("Failed to "), result
    assert run.task_results(ATTACH)[0]["attachment"]["device"].startswith("/dev/loop")
    assert loops_under(tmp_path) == [] and site.leftovers() == {}, site.leftovers()


def test_unknown_provider_option_fails_clearly_and_leaves_nothing(tmp_path, s3_rclone, small_disk):
    site = make_site(tmp_path, s3_rclone, [small_disk], ["web01"], extra=dict(replication_provider_options={"no_such_option": 1}))
    run = site.run()
    assert run.status == "failed"
    result = summary(run)["web01"]
    assert result["status"] == "failed" and "no_such_option" in result["error"], result
    assert site.leftovers() == {}
