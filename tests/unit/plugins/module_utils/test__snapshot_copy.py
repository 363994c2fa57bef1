# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""_snapshot_copy: planning, retention and the copy scheduler (pure logic; a scripted backend and a fake clock)."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _snapshot_copy as sc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, WaitTimeout

NOW = datetime.datetime(2026, 3, 20, 12, 0, tzinfo=datetime.timezone.utc)


def source(sid, days_ago, volume="vol-1"):
    return dict(id=sid, volume_id=volume, start_time=NOW - datetime.timedelta(days=days_ago), size=8, tags={"aws:x": "1", "app": "db"},
                volume_type="gp3", iops=3000, zone="eu-west-1a")


def copy_of(src, cid, region="eu-central-1", selector="tags:b=n", origin_region="eu-west-1", state="completed"):
    tags = sc.state_tags(src, origin_region, selector)
    return sc.parse_copy(cid, region, state, tags)


def test_state_tags_round_trip_and_drop_reserved_tags():
    tags = sc.state_tags(source("snap-a", 1), "eu-west-1", "tags:b=n")
    assert "aws:x" not in tags and tags["app"] == "db" and tags["created-by"] == "vmimage.replication"
    record = sc.parse_copy("snap-c", "eu-central-1", "completed", tags)
    assert record["origin_snapshot_id"] == "snap-a" and record["iops"] == 3000 and record["size"] == 8 and record["zone"] == "eu-west-1a"
    assert record["start_time"] == "2026-03-19T12:00:00Z" and record["tags"] == {"app": "db"}


def test_parse_copy_ignores_what_the_collection_did_not_make():
    assert sc.parse_copy("snap-f", "r", "completed", {"Name": "vmimage.replication-copy"}) is None
    assert sc.parse_copy("snap-f", "r", "completed", {"created-by": "someone-else", sc.ORIGIN_ID: "x", sc.START_TIME: "y"}) is None


def test_selector_label_is_stable_and_short():
    assert sc.selector_label(tags={"b": "2", "a": "1"}) == "tags:a=1,b=2"
    assert sc.selector_label(volume_ids=["vol-2", "vol-1"]) == "volumes:vol-1,vol-2"
    long = sc.selector_label(volume_ids=["vol-%040d" % i for i in range(20)])
    assert len(long) == 256 and long == sc.selector_label(volume_ids=["vol-%040d" % i for i in reversed(range(20))])


def test_plan_copies_only_the_missing_and_prunes_only_this_jobs_copies():
    a, b = source("snap-a", 1), source("snap-b", 2)
    old = source("snap-old", 30)
    copies = [copy_of(a, "snap-ca"), copy_of(old, "snap-cold"), copy_of(old, "snap-other", selector="tags:b=w"),
              copy_of(old, "snap-west", origin_region="us-east-1")]
    plan = sc.plan([a, b], copies, ["eu-central-1"], "eu-west-1", "tags:b=n", 1, 7, NOW)
    assert [(j["source"]["id"], j["region"]) for j in plan["copy"]] == [("snap-b", "eu-central-1")]
    assert [d["id"] for d in plan["delete"]] == ["snap-cold"]
    assert {c["id"] for c in plan["present"]} == {"snap-ca", "snap-cold"}


def test_plan_does_not_copy_what_retention_would_delete_at_once():
    plan = sc.plan([source("snap-new", 1), source("snap-ancient", 90)], [], ["eu-central-1"], "eu-west-1", "s", 1, 7, NOW)
    assert [j["source"]["id"] for j in plan["copy"]] == ["snap-new"] and plan["too_old"] == ["snap-ancient"]


def test_retention_keeps_the_newest_per_volume_whatever_its_age():
    plan = sc.plan([source("snap-x", 40, volume="vol-9")], [], ["eu-central-1"], "eu-west-1", "s", 1, 7, NOW)
    assert [j["source"]["id"] for j in plan["copy"]] == ["snap-x"]


@pytest.mark.parametrize("count, days, text", [(None, None, "set retention_days"), (0, None, "retention_count 0"), (None, 0, "retention_days 0")])
def test_retention_of_zero_is_refused(count, days, text):
    with pytest.raises(ReplicationError, match=text):
        sc.check_retention(count, days)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def pause(self, seconds):
        self.now += seconds


class Backend:
    """Copies that take ``duration`` seconds of the fake clock; refuses a copy beyond ``quota`` in flight (ResourceLimitExceeded)."""

    def __init__(self, clock, duration, quota=99, fail=()):
        self.clock, self.duration, self.quota, self.fail = clock, duration, quota, set(fail)
        self.started, self.refused, self.most = {}, 0, 0

    def running(self):
        return [k for k, t in self.started.items() if self.clock() - t < self.duration]

    def start_copy(self, src, region, tags):
        if len(self.running()) >= self.quota:
            self.refused += 1
            raise sc.Throttled("ResourceLimitExceeded")
        cid = "copy-" + src["id"]
        self.started[cid] = self.clock()
        self.most = max(self.most, len(self.running()))
        return cid

    def states(self, region, ids):
        return {i: ("error" if i[5:] in self.fail else "pending" if i in self.running() else "completed") for i in ids}


def jobs(count):
    return [dict(source=source("snap-%d" % i, 1), region="eu-central-1", tags={}) for i in range(count)]


def test_a_three_hour_copy_succeeds_where_the_sdk_waiter_gives_up_after_600_s():
    clock = Clock()
    backend = Backend(clock, duration=3 * 3600)
    done = sc.run_copies(backend, jobs(2), max_concurrent=5, timeout=4 * 3600, sleep=15, clock=clock, pause=clock.pause)
    assert len(done["completed"]) == 2 and clock.now >= 3 * 3600 > 40 * 15


def test_timeout_is_in_seconds_and_names_the_copies_still_running():
    clock = Clock()
    with pytest.raises(WaitTimeout, match="1 still copying \\(copy-snap-0\\)"):
        sc.run_copies(Backend(clock, duration=7200), jobs(1), 5, timeout=3600, sleep=60, clock=clock, pause=clock.pause)
    assert clock.now == 3600


def test_at_most_max_concurrent_in_flight_and_throttling_backs_off():
    clock = Clock()
    backend = Backend(clock, duration=100, quota=2)
    done = sc.run_copies(backend, jobs(7), max_concurrent=4, timeout=3600, sleep=10, clock=clock, pause=clock.pause)
    assert len(done["completed"]) == 7 and backend.most == 2 and backend.refused >= 1
    clock2 = Clock()
    backend2 = Backend(clock2, duration=100)
    sc.run_copies(backend2, jobs(7), max_concurrent=3, timeout=3600, sleep=10, clock=clock2, pause=clock2.pause)
    assert backend2.most == 3


def test_a_failed_copy_is_reported_and_the_others_finish():
    clock = Clock()
    done = sc.run_copies(Backend(clock, duration=30, fail={"snap-1"}), jobs(3), 5, 600, sleep=10, clock=clock, pause=clock.pause)
    assert [f["origin_snapshot_id"] for f in done["failed"]] == ["snap-1"] and len(done["completed"]) == 2


class PlanBackend(Backend):
    selector = "tags:b=n"

    def __init__(self, clock, sources, copies=(), fail=()):
        super().__init__(clock, duration=30, fail=fail)
        self._sources, self._copies, self.deleted = sources, list(copies), []

    def sources(self):
        return self._sources

    def copies(self, region):
        return [c for c in self._copies if c["region"] == region]

    def delete(self, region, snapshot_id):
        self.deleted.append(snapshot_id)


PARAMS = dict(region="eu-west-1", destination_regions=["eu-central-1"], retention_count=1, retention_days=None, max_concurrent_copies=5,
              wait_timeout=600, wait_sleep=10.0, wait=True)


def test_execute_check_mode_and_real_run_agree_and_a_second_run_changes_nothing():
    clock = Clock()
    old = source("snap-old", 5)
    backend = PlanBackend(clock, [source("snap-new", 1)], copies=[copy_of(old, "snap-cold")])
    preview = sc.execute(backend, PARAMS, True, NOW, clock=clock, pause=clock.pause)
    assert preview["changed"] and [c["origin_snapshot_id"] for c in preview["copied"]] == ["snap-new"]
    assert [d["id"] for d in preview["deleted"]] == ["snap-cold"] and backend.started == {} and backend.deleted == []
    real = sc.execute(backend, PARAMS, False, NOW, clock=clock, pause=clock.pause)
    assert real["changed"] and [d["id"] for d in real["deleted"]] == ["snap-cold"] and backend.deleted == ["snap-cold"]


def test_execute_deletes_nothing_when_a_copy_failed():
    clock = Clock()
    backend = PlanBackend(clock, [source("snap-new", 1)], copies=[copy_of(source("snap-old", 5), "snap-cold")], fail={"snap-new"})
    with pytest.raises(ReplicationError, match="snap-new -> eu-central-1 ended error; nothing was deleted"):
        sc.execute(backend, PARAMS, False, NOW, clock=clock, pause=clock.pause)
    assert backend.deleted == []


def test_execute_refuses_the_source_region_as_destination():
    with pytest.raises(ReplicationError, match="lists the source region"):
        sc.execute(PlanBackend(Clock(), []), dict(PARAMS, destination_regions=["eu-west-1"]), False, NOW)


def test_a_copy_that_ended_in_error_is_deleted_and_made_again():
    a = source("snap-a", 1)
    plan = sc.plan([a], [copy_of(a, "snap-bad", state="error")], ["eu-central-1"], "eu-west-1", "tags:b=n", 1, 7, NOW)
    assert [j["source"]["id"] for j in plan["copy"]] == ["snap-a"] and [d["id"] for d in plan["delete"]] == ["snap-bad"]
    clock = Clock()
    backend = PlanBackend(clock, [a], copies=[copy_of(a, "snap-bad", state="error")])
    result = sc.execute(backend, PARAMS, False, NOW, clock=clock, pause=clock.pause)
    assert backend.deleted == ["snap-bad"] and [c["origin_snapshot_id"] for c in result["copied"]] == ["snap-a"]
