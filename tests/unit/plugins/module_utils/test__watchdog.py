# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""_watchdog on real files and a real SIGTERM: a stage nobody follows stops itself; a followed one does not."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def test_silence_counts_from_the_later_of_start_and_touch(tmp_path):
    beat = tmp_path / "web01.lock"
    beat.write_text("{}")
    old = time.time() - 1000
    os.utime(beat, (old, old))
    dog = _watchdog.Watchdog(str(beat), 60)
    assert dog.silence() < 5  # an old file does not count against a stage that just started
    beat.unlink()
    assert dog.silence() < 5


def test_fires_once_silent_and_not_while_touched(tmp_path):
    beat = tmp_path / "hb"
    beat.write_text("")
    fired = []
    dog = _watchdog.Watchdog(str(beat), 0.6, fire=lambda: fired.append(time.time()), interval=0.05).start()
    try:
        end = time.time() + 1.5
        while time.time() < end:  # followed: touched every 0.1 s
            os.utime(beat)
            time.sleep(0.1)
        assert not fired
        assert dog.fired.wait(3)
        assert len(fired) == 1
    finally:
        dog.stop()
    assert dog.release_stale() is True and not beat.exists()


def test_guard_stops_the_body_cleanly_and_releases_the_lock(tmp_path):
    beat = tmp_path / "web01.lock"
    beat.write_text("{}")
    cleaned = []
    with pytest.raises(ReplicationError) as err:
        with _watchdog.guard(dict(heartbeat_file=str(beat), abandon_after=0.5), "upload web01"):
            try:
                time.sleep(30)  # the SIGTERM the watchdog sends interrupts this
            finally:
                cleaned.append(True)
    assert cleaned == [True]
    msg = err.value.msg
    assert msg.startswith("Failed to upload web01: stopped itself after nobody followed it for 0 s (abandon_after")
    assert "run lock %s released" % beat in msg and err.value.details == {"abandoned": True}
    assert not beat.exists()


def test_guard_lets_a_followed_body_finish(tmp_path):
    beat = tmp_path / "hb"
    beat.write_text("")
    stop = threading.Event()

    def follow():
        while not stop.wait(0.1):
            os.utime(beat)

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        with _watchdog.guard(dict(heartbeat_file=str(beat), abandon_after=0.6), "upload web01") as dog:
            time.sleep(1.5)
        assert not dog.fired.is_set()
    finally:
        stop.set()
        follower.join()
    assert beat.exists()


def test_guard_off_without_options_or_in_check_mode(tmp_path):
    with _watchdog.guard(dict(heartbeat_file=None, abandon_after=5), "x") as dog:
        assert dog is None
    with _watchdog.guard(dict(heartbeat_file=str(tmp_path / "hb"), abandon_after=0.1), "x", check_mode=True) as dog:
        assert dog is None


def test_other_failures_pass_through_unchanged(tmp_path):
    beat = tmp_path / "hb"
    beat.write_text("")
    with pytest.raises(ReplicationError, match="^Failed to upload: endpoint said no$"):
        with _watchdog.guard(dict(heartbeat_file=str(beat), abandon_after=60), "upload"):
            raise ReplicationError("Failed to upload: endpoint said no")
    assert beat.exists()


class _Module:
    def __init__(self, **params):
        self.params = params
        self.check_mode = False


def _dog_looking_once_a_minute(monkeypatch):
    """A watchdog that looks only once a minute: the stage below ends between two looks."""
    real = _watchdog.Watchdog
    monkeypatch.setattr(_watchdog, "Watchdog", lambda path, after: real(path, after, interval=60))


def test_a_stage_that_ends_unfollowed_undoes_its_work_and_frees_the_lock(tmp_path, monkeypatch):
    _dog_looking_once_a_minute(monkeypatch)
    beat = tmp_path / "web01.lock"
    beat.write_text("{}")
    undone = []

    def stage(module):
        time.sleep(0.5)  # nobody touches the heartbeat meanwhile: the controller is gone
        return dict(changed=True, key=module.params["key"])

    run = _watchdog.guarded(stage, "upload", undo=lambda module, result: undone.append(result))
    with pytest.raises(ReplicationError) as err:
        run(_Module(key="web01.qcow2", heartbeat_file=str(beat), abandon_after=0.3))
    assert undone == [dict(changed=True, key="web01.qcow2")]
    assert err.value.details == {"abandoned": True}
    assert "its work is cleaned up, the run lock %s released" % beat in err.value.msg
    assert not beat.exists()


def test_an_undo_that_fails_is_named_instead_of_cleaned_up(tmp_path, monkeypatch):
    _dog_looking_once_a_minute(monkeypatch)
    beat = tmp_path / "web02.lock"
    beat.write_text("{}")

    def undo(module, result):
        raise ReplicationError("it could not delete s3://b/web02.qcow2 (AccessDenied); delete it by hand")

    def stage(module):
        time.sleep(0.5)
        return dict(changed=True)

    with pytest.raises(ReplicationError) as err:
        _watchdog.guarded(stage, "upload", undo=undo)(_Module(key="k", heartbeat_file=str(beat), abandon_after=0.3))
    assert "(abandon_after; its controller died or was cancelled): it could not delete s3://b/web02.qcow2" in err.value.msg
    assert "its work is cleaned up" not in err.value.msg


def test_a_followed_stage_keeps_its_result_and_a_stopped_one_undoes_nothing(tmp_path, monkeypatch):
    beat = tmp_path / "web03.lock"
    beat.write_text("{}")
    undone = []

    def followed(module):
        os.utime(beat)
        return dict(changed=True)

    run = _watchdog.guarded(followed, "upload", undo=lambda module, result: undone.append(result))
    assert run(_Module(key="k", heartbeat_file=str(beat), abandon_after=30)) == dict(changed=True)

    def interrupted(module):
        time.sleep(30)  # the watchdog's SIGTERM ends it before it returns: its own cleanup ran, there is no result to undo
    with pytest.raises(ReplicationError, match="stopped itself"):
        _watchdog.guarded(interrupted, "upload", undo=lambda module, result: undone.append(result))(
            _Module(key="k", heartbeat_file=str(beat), abandon_after=0.5))
    assert undone == []


def test_undo_file_removes_only_what_the_run_wrote(tmp_path):
    dest = tmp_path / "web04.qcow2"
    dest.write_bytes(b"x")
    _watchdog.undo_file(_Module(dest=str(dest)), dict(changed=False))
    assert dest.exists()
    _watchdog.undo_file(_Module(dest=str(dest)), dict(changed=True))
    assert not dest.exists()
    _watchdog.undo_file(_Module(dest=str(dest)), dict(changed=True))  # already gone: nothing to do
