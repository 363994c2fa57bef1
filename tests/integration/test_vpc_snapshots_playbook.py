# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/snapshot.yml through ansible-runner against the VPC emulator subprocess (the real ibm-vpc SDK over HTTP):
in-region boot-volume snapshots with retention that only ever deletes the collection's own snapshots."""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers, _snapshot_prune
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import
from tests.peers import runner

REGION, ZONE = "us-south", "us-south-1"
SERVERS = ("web01", "db01")
PLAYBOOK = os.path.join(runner.ROOT, "playbooks", "snapshot.yml")


class Site:
    """An emulator with two servers; the playbook runs for the inventory group ``servers``."""

    def __init__(self, emu, tmp_path):
        self.emu, self.tmp_path, self.runs = emu, tmp_path, 0
        self.boot = {}
        for name in SERVERS:
            inst = emu.seed_instance(REGION, name=name, zone=ZONE)
            self.boot[name] = inst["boot_volume_attachment"]["volume"]["id"]
        self.vpc = dict(region=REGION, endpoint=emu.service_url(REGION), iam_url=emu.iam_url, max_retries=2, retry_interval=0.05,
                        wait_sleep=0.2)

    def adapter(self):
        return _providers.source({"provider": "ibm_vpc", "ibm_vpc": dict(self.vpc, api_key=self.emu.api_key_for_tests),
                                  "wait_timeout": 20, "wait_sleep": 0.05})

    def run(self, check=False, api_key=None, **extra):
        self.runs += 1
        private = self.tmp_path / ("run-%d" % self.runs)
        private.mkdir()
        group = {"hosts": {n: {"ansible_connection": "local"} for n in SERVERS},
                 "vars": dict({"replication_provider": "ibm_vpc", "replication_snapshot_keep_last": 2,
                               "replication_provider_options": {"ibm_vpc": self.vpc}}, **extra)}
        return runner.run_playbook(PLAYBOOK, {"servers": group}, envvars={"IC_API_KEY": api_key or self.emu.api_key_for_tests},
                                   cmdline="--check" if check else None, private_dir=str(private))

    def snapshots(self, server):
        """The emulator's snapshots of the server's boot volume (all of them, the collection's or not), oldest first."""
        return self.adapter().snapshots(source_volume_id=self.boot[server])


def stats(run):
    return run.custom_stats()["vmimage_snapshot"]


def assert_no_key(run, key):
    assert key not in run.stdout
    assert all(key not in str(event) for event in run.events)


@pytest.fixture
def site(vpc_emulator_factory, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    return Site(vpc_emulator_factory(delay=0.02), tmp_path)


def test_three_runs_keep_two_per_server_and_never_a_hand_made_snapshot(site):
    adapter = site.adapter()
    hand = adapter.call("make a hand-made snapshot", "snapshot", "create_snapshot",
                        {"source_volume": {"id": site.boot["web01"]}, "name": "web01-by-hand"})
    names = {s: [] for s in SERVERS}
    for number in range(3):
        run = site.run()
        assert run.status == "successful", run.stdout
        assert_no_key(run, site.emu.api_key_for_tests)
        for server in SERVERS:
            taken = stats(run)[server]["snapshot"]
            assert taken and taken not in names[server]
            names[server].append(taken)
            assert stats(run)[server]["pruned"] == (names[server][:1] if number == 2 else [])
        time.sleep(1.1)  # default names carry the second: the next run's snapshot gets a new name
    for server in SERVERS:
        left = site.snapshots(server)
        ours = [s["name"] for s in left if _naming.CREATED_BY in str(s.get("user_tags"))]
        assert ours == names[server][1:]
    assert "web01-by-hand" in [s["name"] for s in site.snapshots("web01")]
    assert hand["name"] == "web01-by-hand"


def test_check_mode_lists_what_would_be_taken_and_deleted_and_changes_nothing(site):
    for _unused in range(2):
        assert site.run().status == "successful"
        time.sleep(1.1)
    before = {s: [x["id"] for x in site.snapshots(s)] for s in SERVERS}
    check = site.run(check=True)
    assert check.status == "successful", check.stdout
    for server in SERVERS:
        oldest = site.snapshots(server)[0]["name"]
        assert stats(check)[server]["pruned"] == [oldest]
        assert stats(check)[server]["snapshot"].startswith(server + "-")
        assert stats(check)[server]["snapshot"] not in [s["name"] for s in site.snapshots(server)]
    assert "would delete" in check.stdout
    assert {s: [x["id"] for x in site.snapshots(s)] for s in SERVERS} == before


def test_a_wrong_api_key_fails_clearly_and_is_not_shown(site):
    wrong = "wrong-api-key-0123456789abcdef"
    run = site.run(api_key=wrong)
    assert run.status == "failed"
    assert "Failed to" in run.stdout
    assert_no_key(run, wrong)
    assert all(site.snapshots(s) == [] for s in SERVERS)


def test_retention_that_would_delete_everything_is_refused():
    with pytest.raises(ReplicationError, match="keep_last 0 would delete every snapshot"):
        _snapshot_prune.check_retention(0, None)
    assert _snapshot_prune.check_retention(None, None) is None
    assert _snapshot_prune.check_retention(None, 3) == 1


def test_prune_plan_counts_only_the_collections_snapshots_and_keeps_the_one_taken():
    now = _naming.parse_time("2026-03-10T12:00:00Z")
    snaps = [{"name": "web01-2026030%d-120000" % day, "snapshot_time": "2026-03-0%dT12:00:00Z" % day, "created_by": _naming.CREATED_BY}
             for day in (1, 2, 3)]
    snaps.append({"name": "web01-by-hand", "snapshot_time": "2026-02-01T00:00:00Z", "created_by": None})
    taken = {"name": "web01-20260310-120000", "snapshot_time": "2026-03-10T12:00:00Z"}
    names = [s["name"] for s in _snapshot_prune.plan(snaps, taken, 2, None, now=now)]
    assert names == ["web01-20260301-120000", "web01-20260302-120000"]
    assert [s["name"] for s in _snapshot_prune.plan(snaps, taken, 1, 8, now=now)] == ["web01-20260301-120000"]
    assert _snapshot_prune.plan(snaps, taken, 5, None, now=now) == []
