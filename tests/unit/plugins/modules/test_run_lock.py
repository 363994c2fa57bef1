"""run_lock with slots: the lock, then a slot of the conversion host, in one task; given back together."""

from __future__ import annotations

import os


def _args(work, server, **extra):
    return dict(dict(server=server, dir=str(work), slots=1, slot_wait=0, controller="ctl-1"), **extra)


def test_lock_and_slot_in_one_task_released_together(tmp_path, module_runner):
    checked = module_runner("run_lock", _args(tmp_path, "web01"), check_mode=True)
    assert not checked.get("failed") and checked["slot"] == 0, checked
    assert not os.path.exists(tmp_path / "web01.lock") and not os.path.exists(tmp_path / "slots" / "0.slot")
    taken = module_runner("run_lock", _args(tmp_path, "web01"))
    assert not taken.get("failed") and taken["changed"] and taken["slot"] == 0 and taken["slot_waited"] < 1.0, taken
    assert taken["store"] == "host" and taken["object"] == "" and taken["protocol"] == ""
    assert os.path.exists(tmp_path / "web01.lock") and os.path.exists(tmp_path / "slots" / "0.slot")
    again = module_runner("run_lock", _args(tmp_path, "web01", token=taken["token"]))
    assert not again.get("failed") and not again["changed"] and again["slot"] == 0, again
    released = module_runner("run_lock", dict(server="web01", dir=str(tmp_path), token=taken["token"], state="absent"))
    assert released["changed"] and released["slot"] == 0, released
    assert not os.path.exists(tmp_path / "web01.lock") and os.listdir(tmp_path / "slots") == []


def test_no_free_slot_fails_naming_the_holder_and_gives_the_lock_back(tmp_path, module_runner):
    first = module_runner("run_lock", _args(tmp_path, "web01"))
    assert not first.get("failed"), first
    checked = module_runner("run_lock", _args(tmp_path, "web02"), check_mode=True)
    assert not checked.get("failed") and checked["slot"] is None, checked
    refused = module_runner("run_lock", _args(tmp_path, "web02"))
    assert refused.get("failed") and "web01" in refused["msg"] and "replication_host_slots" in refused["msg"], refused
    # web02 holds nothing afterwards: its lock file went back with the failure; web01's lock and slot are untouched.
    assert not os.path.exists(tmp_path / "web02.lock")
    assert os.path.exists(tmp_path / "web01.lock") and os.listdir(tmp_path / "slots") == ["0.slot"]
    # Without slots, web02 locks as before (the slot limit is the role's choice, per task).
    plain = module_runner("run_lock", dict(server="web02", dir=str(tmp_path)))
    assert not plain.get("failed") and plain["slot"] is None, plain


def test_slots_need_a_host_lock_and_no_negative_count(tmp_path, module_runner):
    negative = module_runner("run_lock", _args(tmp_path, "web01", slots=-1))
    assert negative.get("failed") and "slots must be 0 or more" in negative["msg"], negative
    cos = dict(endpoint="http://127.0.0.1:9", access_key_id="AKIAEXAMPLE0000", secret_access_key="not-a-real-secret-0123456789")
    bucket = module_runner("run_lock", dict(server="web01", store="bucket", bucket="b", slots=2, cos=cos))
    assert bucket.get("failed") and "needs store host or both" in bucket["msg"], bucket
    assert not os.path.exists(tmp_path / "web01.lock")
