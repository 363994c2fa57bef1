"""A fleet: 8 servers over 2 conversion hosts (real sshd on 127.0.0.2 and 127.0.0.3), at most 2 at once on each."""

from __future__ import annotations

import os
import sys

import pytest

from tests.integration.replication import PLAYBOOK, build_disk, make_site, summary
from tests.peers.runner import run_playbook

ADDRESSES = ("127.0.0.2", "127.0.0.3")
SERVERS = ["srv%02d" % index for index in range(int(os.environ.get("VMI_FLEET_SERVERS", "8")))]
# The run lock task takes the slot after the lock; the release task frees it first.
TAKE, FREE = "Take the server's run lock", "Release the server's run lock"


@pytest.fixture(scope="module")
def fleet_disks(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet-disks")
    return [build_disk(str(base / "a.img"), size="48M", fill=0.5), build_disk(str(base / "b.img"), size="40M", fill=0.4)]


def fleet_inventory(site, hosts, slots):
    inventory = site.inventory(
        replication_conversion_hosts=["conv1", "conv2"], replication_host_slots=slots,
        # Both hosts share this filesystem: each gets its own work and snapshot dirs (so its own locks and slots).
        replication_work_dir=os.path.join(site.root, "{{ replicate_server_opts.conversion_host }}", "work"),
        replication_snapshot_dir=os.path.join(site.root, "{{ replicate_server_opts.conversion_host }}", "snapshots"),
    )
    del inventory["servers"]["vars"]["replication_conversion_host"]
    # The modules run with this interpreter on the hosts (the same machine): it has the collection's libraries.
    inventory["conversion_hosts"] = {"hosts": {"conv%d" % (index + 1): host.inventory_vars(python=sys.executable)
                                               for index, host in enumerate(hosts)}}
    return inventory


def hold_intervals(run):
    """Per conversion host address: (server, slot, taken, freeing) from the events, an interval inside each true hold."""
    taken, freeing = {}, {}
    for item in run.events:
        data = item.get("event_data", {})
        task, host = data.get("task"), data.get("host")
        if task == TAKE and item["event"] == "runner_on_ok":
            res = data.get("res") or {}
            where = (res.get("_ansible_delegated_vars") or {}).get("ansible_host")
            taken[host] = (where, res.get("slot"), res.get("slot_waited"), item["created"])
        elif task == FREE and item["event"] == "runner_on_start":
            freeing[host] = item["created"]
    return {host: (taken[host], freeing.get(host)) for host in taken}


def failures(run):
    """Each failed task: host, task and message (what a failing run's tail does not show)."""
    return [(item["event_data"].get("host"), item["event_data"].get("task"), (item["event_data"].get("res") or {}).get("msg"))
            for item in run.events if item["event"] == "runner_on_failed"]


def peak_overlap(intervals):
    edges = sorted([(start, 1) for start, _unused in intervals] + [(end, -1) for _unused, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    peak = inside = 0
    for _unused, step in edges:
        inside += step
        peak = max(peak, inside)
    return peak


def assert_spread_two_at_a_time(run, servers):
    """The servers went round-robin over the two hosts, at most 2 at once on each, some waiting; {address: [server]}."""
    by_address = {}
    holds = hold_intervals(run)
    assert sorted(holds) == sorted(servers)
    for server, ((where, slot, waited, start), end) in holds.items():
        assert end is not None and slot in (0, 1), (server, slot)
        by_address.setdefault(where, []).append((server, waited, (start, end)))
    # Round-robin over the pool: half the servers on each host, in inventory order.
    assert sorted(by_address) == list(ADDRESSES)
    assert sorted(s for s, _w, _i in by_address[ADDRESSES[0]]) == servers[0::2]
    for address, entries in by_address.items():
        assert peak_overlap([interval for _s, _w, interval in entries]) <= 2, (address, entries)
        # 4 servers, 2 slots: at least two of them had to wait for one.
        assert sum(1 for _s, waited, _i in entries if waited > 0.5) >= 2, (address, entries)
    return {address: sorted(s for s, _w, _i in entries) for address, entries in by_address.items()}


def test_eight_servers_over_two_conversion_hosts_two_at_a_time(tmp_path, s3_seaweedfs, sshd_factory, fleet_disks):
    hosts = [sshd_factory(address) for address in ADDRESSES]
    site = make_site(tmp_path, s3_seaweedfs, fleet_disks, SERVERS)
    site.write_cos_file()
    try:
        run = run_playbook(PLAYBOOK, fleet_inventory(site, hosts, slots=2), cmdline="--forks 8",
                           envvars={"ANSIBLE_ASYNC_DIR": site.async_dir}, private_dir=str(tmp_path / "runner"))
    finally:
        os.unlink(site.cos_file)
    assert run.status == "successful", failures(run)
    results = summary(run)
    assert sorted(results) == SERVERS and {r["status"] for r in results.values()} == {"replicated"}, results
    for server in SERVERS:
        assert site.catalog(server)["latest"], server

    assert_spread_two_at_a_time(run, SERVERS)
    # Every slot and lock was given back.
    for name in ("conv1", "conv2"):
        work = os.path.join(site.root, name, "work")
        assert not os.listdir(os.path.join(work, "slots")), name
        assert not [f for f in os.listdir(work) if f.endswith(".lock")], name


def test_a_bad_pool_fails_each_server_naming_the_variable(tmp_path, s3_seaweedfs, fleet_disks):
    site = make_site(tmp_path, s3_seaweedfs, fleet_disks, SERVERS[:2])
    inventory = site.inventory(replication_conversion_hosts=["conv1", "conv1"])
    del inventory["servers"]["vars"]["replication_conversion_host"]
    site.write_cos_file()
    try:
        run = run_playbook(PLAYBOOK, inventory, private_dir=str(tmp_path / "runner"))
    finally:
        os.unlink(site.cos_file)
    assert run.status == "failed"
    assert "replication_conversion_hosts names a host twice" in run.stdout
    assert site.objects() == {}
