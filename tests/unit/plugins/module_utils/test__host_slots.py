# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""_host_slots on real files: at most N holders, a slot lives as long as its run lock, release only by the holder."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _host_slots, _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def _run(work, server):
    """A run of ``server``: its lock taken, as the role does before a slot."""
    token = "tok-" + server
    _run_lock.acquire(str(work), server, token)
    return _run_lock.lock_path(str(work), server), token


def test_two_slots_admit_two_runs_and_the_third_fails_naming_the_holders(tmp_path):
    runs = [_run(tmp_path, name) for name in ("web01", "web02", "web03")]
    assert _host_slots.acquire(str(tmp_path), 2, "web01", *runs[0], wait=0)[0] == 0
    assert _host_slots.acquire(str(tmp_path), 2, "web02", *runs[1], wait=0)[0] == 1
    with pytest.raises(ReplicationError) as err:
        _host_slots.acquire(str(tmp_path), 2, "web03", *runs[2], wait=0)
    assert "all 2 slots" in err.value.msg and "web01, web02" in err.value.msg and "replication_host_slots" in err.value.msg
    # Taking again with the token that holds a slot returns that slot.
    assert _host_slots.acquire(str(tmp_path), 2, "web02", *runs[1], wait=0)[0] == 1
    assert _host_slots.held_by(str(tmp_path), runs[1][1]) == 1


def test_a_freed_slot_goes_to_a_waiting_run(tmp_path):
    first, second = _run(tmp_path, "web01"), _run(tmp_path, "web02")
    _host_slots.acquire(str(tmp_path), 1, "web01", *first, wait=0)
    threading.Timer(0.3, _host_slots.release, (str(tmp_path), first[1])).start()
    index, waited = _host_slots.acquire(str(tmp_path), 1, "web02", *second, wait=10, interval=0.05)
    assert index == 0 and 0.2 <= waited < 10


def test_a_slot_whose_run_lock_is_gone_or_stale_is_free(tmp_path):
    first, second, third = _run(tmp_path, "web01"), _run(tmp_path, "web02"), _run(tmp_path, "web03")
    _host_slots.acquire(str(tmp_path), 1, "web01", *first, wait=0)
    _run_lock.release(str(tmp_path), "web01", first[1])  # the run ended (or was killed and its lock cleaned) without freeing
    assert _host_slots.acquire(str(tmp_path), 1, "web02", *second, wait=0)[0] == 0
    then = time.time() - 1000
    os.utime(second[0], (then, then))  # web02's controller died: no heartbeat for 1000 s
    assert _host_slots.acquire(str(tmp_path), 1, "web03", *third, wait=0, stale_after=900)[0] == 0
    assert _host_slots.held_by(str(tmp_path), third[1]) == 0 and _host_slots.held_by(str(tmp_path), second[1]) is None


def test_release_frees_only_the_slot_of_its_token(tmp_path):
    first = _run(tmp_path, "web01")
    _host_slots.acquire(str(tmp_path), 2, "web01", *first, wait=0)
    assert _host_slots.release(str(tmp_path), "someone-else") is None
    assert _host_slots.held_by(str(tmp_path), first[1]) == 0
    assert _host_slots.release(str(tmp_path), first[1]) == 0
    assert _host_slots.release(str(tmp_path), first[1]) is None
    assert os.listdir(tmp_path / "slots") == []


def test_a_slot_needs_the_run_lock_of_its_token(tmp_path):
    lock, _unused = _run(tmp_path, "web01")
    with pytest.raises(ReplicationError, match="not held by this run"):
        _host_slots.acquire(str(tmp_path), 1, "web01", lock, "another-token", wait=0)
    with pytest.raises(ReplicationError, match="at least 1"):
        _host_slots.acquire(str(tmp_path), 0, "web01", lock, "tok-web01", wait=0)


def test_many_takers_at_once_never_exceed_the_slots(tmp_path):
    runs = [_run(tmp_path, "srv%02d" % i) for i in range(8)]
    inside, peak, lock = [0], [0], threading.Lock()

    def work(run, name):
        _host_slots.acquire(str(tmp_path), 3, name, *run, wait=30, interval=0.01)
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        _host_slots.release(str(tmp_path), run[1])

    threads = [threading.Thread(target=work, args=(run, "srv%02d" % i)) for i, run in enumerate(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3


def test_waiting_keeps_the_run_lock_alive(tmp_path):
    first, second = _run(tmp_path, "web01"), _run(tmp_path, "web02")
    _host_slots.acquire(str(tmp_path), 1, "web01", *first, wait=0)
    then = time.time() - 800
    os.utime(second[0], (then, then))
    with pytest.raises(ReplicationError, match="slots of this conversion host stayed busy"):
        _host_slots.acquire(str(tmp_path), 1, "web02", *second, wait=0.2, interval=0.05)
    assert _run_lock.read(second[0])["age"] < 60


def test_a_long_wait_calls_keepalive_every_so_often_and_still_fails_after_the_whole_wait(tmp_path):
    first, second = _run(tmp_path, "web01"), _run(tmp_path, "web02")
    _host_slots.acquire(str(tmp_path), 1, "web01", *first, wait=0)
    now = [time.time()]
    beats = []
    with pytest.raises(ReplicationError) as err:
        _host_slots.acquire(str(tmp_path), 1, "web02", *second, wait=10, clock=lambda: now[0],
                            pause=lambda seconds: now.__setitem__(0, now[0] + seconds), keepalive=lambda: beats.append(now[0]),
                            keepalive_every=3)
    # 10 s of waiting in 1 s pauses: a beat at 3, 6 and 9 s; the error names the whole wait.
    assert len(beats) == 3 and "stayed busy for 10s" in err.value.msg, (beats, err.value.msg)
    assert _host_slots.held_by(str(tmp_path), second[1]) is None
