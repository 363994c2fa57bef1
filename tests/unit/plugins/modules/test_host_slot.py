"""host_slot against real slot and lock files: check mode takes nothing, freeing is only by the holder."""

from __future__ import annotations

import os

from ansible_collections.vmimage.replication.plugins.module_utils import _run_lock


def _lock(work, server):
    token = "tok-" + server
    _run_lock.acquire(str(work), server, token)
    return dict(lock=_run_lock.lock_path(str(work), server), token=token, server=server)


def test_take_and_free_a_slot(tmp_path, module_runner):
    web01 = _lock(tmp_path, "web01")
    checked = module_runner("host_slot", dict(dir=str(tmp_path), slots=1, **web01), check_mode=True)
    assert checked["changed"] is True and checked["slot"] == 0 and not os.path.exists(tmp_path / "slots" / "0.slot")
    taken = module_runner("host_slot", dict(dir=str(tmp_path), slots=1, **web01))
    assert taken["changed"] is True and taken["slot"] == 0 and taken["busy"] == ["web01"]
    again = module_runner("host_slot", dict(dir=str(tmp_path), slots=1, **web01))
    assert again["changed"] is False and again["slot"] == 0
    freed = module_runner("host_slot", dict(dir=str(tmp_path), token=web01["token"], state="absent"))
    assert freed["changed"] is True and freed["slot"] == 0 and freed["busy"] == []
    assert module_runner("host_slot", dict(dir=str(tmp_path), token=web01["token"], state="absent"))["changed"] is False


def test_busy_host_fails_naming_the_holder_and_check_mode_says_no_slot(tmp_path, module_runner):
    web01, web02 = _lock(tmp_path, "web01"), _lock(tmp_path, "web02")
    module_runner("host_slot", dict(dir=str(tmp_path), slots=1, **web01))
    checked = module_runner("host_slot", dict(dir=str(tmp_path), slots=1, **web02), check_mode=True)
    assert checked["changed"] is False and checked["slot"] is None and checked["busy"] == ["web01"]
    failed = module_runner("host_slot", dict(dir=str(tmp_path), slots=1, wait=0, **web02))
    assert failed["failed"] and "web01" in failed["msg"] and "replication_host_slots" in failed["msg"]
    # Another token cannot free web01's slot.
    assert module_runner("host_slot", dict(dir=str(tmp_path), token=web02["token"], state="absent"))["changed"] is False
    assert os.path.exists(tmp_path / "slots" / "0.slot")


def test_slots_below_one_are_refused(tmp_path, module_runner):
    failed = module_runner("host_slot", dict(dir=str(tmp_path), slots=0, **_lock(tmp_path, "web01")))
    assert failed["failed"] and "slots must be 1 or more" in failed["msg"]
