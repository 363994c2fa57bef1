# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""_run_lock on real files: one holder, bounded wait, stale take-over, release only by the holder."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._jobs import touch


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_first_run_takes_the_lock_and_records_itself(tmp_path):
    changed, holder = _run_lock.acquire(str(tmp_path / "work"), "web01", "tok-a", controller="ctl-1", pid=4242)
    assert changed and holder["token"] == "tok-a"
    path = tmp_path / "work" / "web01.lock"
    record = json.loads(path.read_text())
    assert record["host"] == "ctl-1" and record["pid"] == 4242 and record["token"] == "tok-a"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # The same token again: no change, heartbeat touched.
    _age(path, 100)
    changed, _unused = _run_lock.acquire(str(tmp_path / "work"), "web01", "tok-a")
    assert not changed and _run_lock.read(str(path))["age"] < 5


def test_second_run_fails_at_once_naming_the_holder_and_the_option(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a", controller="ctl-1", pid=4242)
    with pytest.raises(ReplicationError) as err:
        _run_lock.acquire(str(tmp_path), "web01", "tok-b")
    msg = err.value.msg
    assert "another run tok-a from ctl-1 (pid 4242" in msg
    assert "replication_lock_wait" in msg and "replication_lock_stale_after" in msg
    assert _run_lock.read(str(tmp_path / "web01.lock"))["token"] == "tok-a"


def test_second_run_waits_for_the_release(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a")
    timer = threading.Timer(0.5, _run_lock.release, (str(tmp_path), "web01", "tok-a"))
    timer.start()
    try:
        changed, holder = _run_lock.acquire(str(tmp_path), "web01", "tok-b", wait=30, interval=0.1)
    finally:
        timer.join()
    assert changed and holder["token"] == "tok-b"


def test_wait_is_bounded(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a")
    now = [1000.0]
    _age(tmp_path / "web01.lock", 0)

    def pause(seconds):
        now[0] += seconds

    with pytest.raises(ReplicationError, match="now 3.0s"):
        _run_lock.acquire(str(tmp_path), "web01", "tok-b", wait=3.0, stale_after=1e9, clock=lambda: now[0] + time.time() - 1000.0, pause=pause)


def test_stale_lock_is_taken_over_fresh_one_is_not(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a")
    path = tmp_path / "web01.lock"
    _age(path, 50)
    with pytest.raises(ReplicationError):
        _run_lock.acquire(str(tmp_path), "web01", "tok-b", stale_after=60)
    _age(path, 61)
    changed, holder = _run_lock.acquire(str(tmp_path), "web01", "tok-b", stale_after=60)
    assert changed and holder["token"] == "tok-b"
    assert sorted(os.listdir(tmp_path)) == ["web01.lock"]


def test_heartbeat_touch_keeps_it_fresh(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a")
    path = tmp_path / "web01.lock"
    _age(path, 500)
    assert touch(str(path)) is True
    assert _run_lock.read(str(path))["age"] < 5
    assert touch(str(tmp_path / "missing.lock")) is False
    assert not (tmp_path / "missing.lock").exists()
    assert _run_lock.heartbeat(str(tmp_path), "web01", "tok-b") is False


def test_release_only_by_the_holder(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-a")
    assert _run_lock.release(str(tmp_path), "web01", "tok-b") is False
    assert (tmp_path / "web01.lock").exists()
    assert _run_lock.release(str(tmp_path), "web01", "tok-a") is True
    assert os.listdir(tmp_path) == []
    assert _run_lock.release(str(tmp_path), "web01", "tok-a") is False


def test_racing_takers_of_a_stale_lock_one_wins(tmp_path):
    _run_lock.acquire(str(tmp_path), "web01", "tok-old")
    _age(tmp_path / "web01.lock", 1000)
    winners, errors = [], []

    def take(token):
        try:
            winners.append(_run_lock.acquire(str(tmp_path), "web01", token, stale_after=60)[1]["token"])
        except ReplicationError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=("tok-%d" % i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1 and len(errors) == 7
    assert _run_lock.read(str(tmp_path / "web01.lock"))["token"] == winners[0]
    assert sorted(os.listdir(tmp_path)) == ["web01.lock"]


@pytest.mark.parametrize("server", ["", "../x", "a/b", ".hidden"])
def test_bad_server_name(tmp_path, server):
    with pytest.raises(ReplicationError, match="not a usable server name"):
        _run_lock.acquire(str(tmp_path), server, "tok")


def test_module_takes_and_releases(tmp_path, module_runner):
    result = module_runner("run_lock", dict(server="web01", dir=str(tmp_path), controller="ctl"))
    assert result["changed"] and result["holder"]["host"] == "ctl"
    other = module_runner("run_lock", dict(server="web01", dir=str(tmp_path)))
    assert other["failed"] and "another run %s from ctl" % result["token"] in other["msg"]
    check = module_runner("run_lock", dict(server="web02", dir=str(tmp_path)), check_mode=True)
    assert check["changed"] and not (tmp_path / "web02.lock").exists()
    wrong = module_runner("run_lock", dict(server="web01", dir=str(tmp_path), token="not-mine", state="absent"))
    assert not wrong["changed"] and (tmp_path / "web01.lock").exists()
    released = module_runner("run_lock", dict(server="web01", dir=str(tmp_path), token=result["token"], state="absent"))
    assert released["changed"] and not (tmp_path / "web01.lock").exists()
