# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The run lock in the bucket, against both real S3 servers and with both protocols: SeaweedFS honours
If-None-Match (conditional), rclone serve s3 ignores it (claims); SeaweedFS is also driven with claims.

Concurrent takers are threads with their own clients, released together by a barrier.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos
from tests.integration.replication import make_site, summary
from tests.integration.test_run_lock import gated, lock_disk, start, wait_for  # noqa: F401  # pylint: disable=unused-import

SERVER = "web01"
PREFIX = "images/"
KEY = "images/web01/.lock"


def record(token, host="ctl-1", pid=4242):
    now = time.time()
    return dict(token=token, host=host, pid=pid, started=now, heartbeat=now, server=SERVER)


def client_of(s3_server):
    return _cos.connect(s3_server.cos())


def keys(s3_server, bucket):
    return sorted(item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents") or [])


@pytest.fixture(params=[_bucket_lock.CONDITIONAL, _bucket_lock.CLAIMS])
def protocol(request, s3_server):
    if request.param == _bucket_lock.CONDITIONAL and s3_server.kind == "rclone":
        pytest.skip("rclone serve s3 ignores If-None-Match (test_probe_tells_which_servers_honour_conditional_writes)")
    return request.param


def test_probe_tells_which_servers_honour_conditional_writes(s3_server, bucket):
    found = _bucket_lock.detect_mode(client_of(s3_server), bucket, KEY, "probe-token")
    assert found == {"seaweedfs": _bucket_lock.CONDITIONAL, "rclone": _bucket_lock.CLAIMS}[s3_server.kind]
    assert keys(s3_server, bucket) == []  # the probe object is gone


def test_two_concurrent_takers_exactly_one_wins(s3_server, bucket, protocol):
    takers = 4
    barrier = threading.Barrier(takers)
    results = {}

    def take(token):
        client = client_of(s3_server)
        barrier.wait()
        results[token] = _bucket_lock.acquire(client, bucket, KEY, record(token), 900, 0, protocol)

    threads = [threading.Thread(target=take, args=("tok-%d" % number,)) for number in range(takers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    winners = [token for token, (changed, _holder) in results.items() if changed]
    assert len(results) == takers and len(winners) == 1, results
    # Every loser was told who holds it; the lock is the winner's; the losers left no claim behind.
    assert all(holder["token"] == winners[0] for _changed, holder in results.values())
    client = client_of(s3_server)
    assert _bucket_lock.holder(client, bucket, KEY, 900)["token"] == winners[0]
    if protocol == _bucket_lock.CLAIMS:
        assert [claim["token"] for claim in _bucket_lock.list_claims(client, bucket, KEY)] == [winners[0]]
    assert _bucket_lock.release(client, bucket, KEY, winners[0])
    assert keys(s3_server, bucket) == []


def test_held_lock_second_taker_fails_fast_or_waits_bounded(s3_server, bucket, protocol):
    client = client_of(s3_server)
    assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a", host="awx-1", pid=11), 900, 0, protocol)[0]
    before = keys(s3_server, bucket)
    changed, holder = _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 900, 0, protocol)
    assert not changed and holder["token"] == "tok-a" and holder["host"] == "awx-1" and holder["pid"] == 11
    # A bounded wait: it pauses, then gives up naming the holder; the holder's objects are as they were.
    pauses = []
    changed, holder = _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 900, 1.0, protocol, pause=pauses.append, interval=0.4)
    assert not changed and holder["token"] == "tok-a" and pauses
    assert keys(s3_server, bucket) == before
    # The same token again is no change (release then take: the next test).
    assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, protocol)[0] is False


def test_released_while_waiting_the_waiter_takes_it(s3_server, bucket, protocol):
    client = client_of(s3_server)
    assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, protocol)[0]
    timer = threading.Timer(1.0, _bucket_lock.release, (client_of(s3_server), bucket, KEY, "tok-a"))
    timer.start()
    try:
        changed, holder = _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 900, 60, protocol, interval=0.2)
    finally:
        timer.join()
    assert changed and holder["token"] == "tok-b"
    assert _bucket_lock.release(client, bucket, KEY, "tok-b") and keys(s3_server, bucket) == []


def test_stale_lock_is_taken_over(s3_server, bucket, protocol):
    client = client_of(s3_server)
    assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, protocol)[0]
    time.sleep(2.1)  # the endpoint's clock has a one-second grain: the lock is now at least 1 s old
    assert not _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 900, 0, protocol)[0]
    changed, holder = _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 1.0, 0, protocol)
    assert changed and holder["token"] == "tok-b"
    # The run that is gone finds it is no longer the holder: its heartbeat and release touch nothing.
    assert not _bucket_lock.heartbeat(client, bucket, KEY, "tok-a", protocol)
    assert not _bucket_lock.release(client, bucket, KEY, "tok-a")
    assert _bucket_lock.holder(client, bucket, KEY, 900)["token"] == "tok-b"
    assert _bucket_lock.release(client, bucket, KEY, "tok-b") and keys(s3_server, bucket) == []


def test_release_by_a_wrong_token_is_refused_and_heartbeat_refreshes(s3_server, bucket, protocol):
    client = client_of(s3_server)
    assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, protocol)[0]
    assert not _bucket_lock.release(client, bucket, KEY, "tok-wrong")
    assert _bucket_lock.holder(client, bucket, KEY, 900)["token"] == "tok-a"
    time.sleep(2.1)
    assert _bucket_lock.holder(client, bucket, KEY, 900)["age"] >= 1.0
    assert _bucket_lock.heartbeat(client, bucket, KEY, "tok-a", protocol)
    assert _bucket_lock.holder(client, bucket, KEY, 900)["age"] < 1.0 + 1.0
    assert _bucket_lock.release(client, bucket, KEY, "tok-a") and keys(s3_server, bucket) == []


def test_each_protocol_sees_the_lock_the_other_took(s3_seaweedfs):
    bucket = s3_seaweedfs.make_bucket("t-cross-%d" % int(time.time() * 1000))
    client = client_of(s3_seaweedfs)
    for first, second in ((_bucket_lock.CONDITIONAL, _bucket_lock.CLAIMS), (_bucket_lock.CLAIMS, _bucket_lock.CONDITIONAL)):
        assert _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, first)[0]
        changed, holder = _bucket_lock.acquire(client, bucket, KEY, record("tok-b"), 900, 0, second)
        assert not changed and holder["token"] == "tok-a", (first, second)
        assert _bucket_lock.release(client, bucket, KEY, "tok-a")
    assert keys(s3_seaweedfs, bucket) == []


def lock_args(s3_server, bucket, **extra):
    args = dict(server=SERVER, store="bucket", cos=s3_server.cos(), bucket=bucket, prefix=PREFIX, controller="awx-1")
    args.update(extra)
    return args


def test_module_takes_fails_naming_the_holder_and_releases_only_by_token(s3_server, bucket, module_runner):
    first = module_runner("run_lock", lock_args(s3_server, bucket))
    assert not first.get("failed"), first
    assert first["changed"] and first["store"] == "bucket" and first["path"] == "s3://%s/%s" % (bucket, KEY)
    assert first["protocol"] == {"seaweedfs": "conditional", "rclone": "claims"}[s3_server.kind]
    before = keys(s3_server, bucket)
    # Check mode says it would fail, and a real second run fails at once naming the holder; neither writes anything.
    for check_mode in (True, False):
        second = module_runner("run_lock", lock_args(s3_server, bucket, controller="awx-2"), check_mode=check_mode)
        assert second.get("failed"), second
        msg = second["msg"]
        assert "Failed to start replicating web01: another run %s from awx-1 (pid" % first["token"] in msg, msg
        assert "s3://%s/%s" % (bucket, KEY) in msg and "replication_lock_wait" in msg, msg
        assert keys(s3_server, bucket) == before
    wrong = module_runner("run_lock", lock_args(s3_server, bucket, token="not-the-holder", state="absent"))
    assert not wrong.get("failed") and not wrong["changed"] and wrong["holder"]["token"] == first["token"], wrong
    assert keys(s3_server, bucket) == before
    released = module_runner("run_lock", lock_args(s3_server, bucket, token=first["token"], state="absent"))
    assert released["changed"] and keys(s3_server, bucket) == []


def test_store_both_takes_the_two_in_one_task_and_gives_back_the_bucket_lock_when_the_host_lock_is_held(
        s3_server, bucket, module_runner, tmp_path):
    work = str(tmp_path / "work")
    both = lock_args(s3_server, bucket, store="both", dir=work)
    host_file = os.path.join(work, "web01.lock")
    # Check mode takes nothing; then one task takes the bucket lock and the host lock with one token.
    planned = module_runner("run_lock", both, check_mode=True)
    assert not planned.get("failed") and planned["changed"], planned
    assert keys(s3_server, bucket) == [] and not os.path.exists(host_file)
    first = module_runner("run_lock", both)
    assert not first.get("failed") and first["changed"] and first["store"] == "both", first
    assert first["path"] == host_file and first["object"] == "s3://%s/%s" % (bucket, KEY), first
    assert first["protocol"] == {"seaweedfs": "conditional", "rclone": "claims"}[s3_server.kind]
    assert first["holder"]["token"] == first["bucket_holder"]["token"] == first["token"], first
    assert _bucket_lock.holder(client_of(s3_server), bucket, KEY, 900)["token"] == first["token"]
    assert json.loads(open(host_file).read())["token"] == first["token"]
    # Taking it again with the token is no change; releasing with it frees both.
    again = module_runner("run_lock", dict(both, token=first["token"]))
    assert not again.get("failed") and not again["changed"], again
    released = module_runner("run_lock", dict(both, token=first["token"], state="absent"))
    assert not released.get("failed") and released["changed"], released
    assert keys(s3_server, bucket) == [] and not os.path.exists(host_file)
    # Another run holds only the host lock (a store=host run on this conversion host): the task fails naming it, and
    # the bucket lock it took on the way is given back.
    other = module_runner("run_lock", dict(server=SERVER, dir=work, controller="awx-9"))
    assert not other.get("failed") and other["changed"], other
    refused = module_runner("run_lock", both)
    assert refused.get("failed"), refused
    assert "another run %s from awx-9" % other["token"] in refused["msg"] and host_file in refused["msg"], refused
    assert keys(s3_server, bucket) == []
    assert json.loads(open(host_file).read())["token"] == other["token"]
    assert s3_server.secret_access_key not in str(refused)
    # Releasing needs the token; without dir, store=both says what is missing.
    assert "token is required" in module_runner("run_lock", dict(both, state="absent"))["msg"]
    missing = module_runner("run_lock", lock_args(s3_server, bucket, store="both"))
    assert missing.get("failed") and "dir" in missing["msg"], missing


def while_doing(action, every, work):
    """``work()``'s result; ``action()`` runs every ``every`` seconds in a thread while it runs (its first error, if
    any, is raised afterwards: a thread that died would otherwise leave the test to fail on what it did not record)."""
    done, errors = threading.Event(), []

    def repeat():
        while not done.wait(every):
            try:
                action()
            except Exception as exc:  # noqa: BLE001  # pylint: disable=broad-except
                errors.append(exc)
                return
    thread = threading.Thread(target=repeat)
    thread.start()
    try:
        result = work()
    finally:
        done.set()
        thread.join()
    if errors:
        raise errors[0]
    return result


def test_a_slot_wait_keeps_the_bucket_lock_fresh_and_a_failed_wait_gives_it_back(s3_server, bucket, module_runner, tmp_path):
    work = str(tmp_path / "work")
    # Another live run holds the host's only slot (its lock's heartbeat kept by a thread, as its polls would).
    other = module_runner("run_lock", dict(server="db01", dir=work, slots=1, controller="awx-9"))
    assert not other.get("failed") and other["slot"] == 0, other
    beats = []

    def watch():
        os.utime(other["path"])
        held = _bucket_lock.holder(client_of(s3_server), bucket, KEY, 900)
        if held:
            beats.append(held["heartbeat"])
    # stale_after 12: the bucket lock is refreshed every 3 s of the 8.5 s wait for a slot. (A server dates objects to the
    # second, and a claim older than half of stale_after is lost rather than refreshed: less would be a coin toss.)
    refused = while_doing(watch, 0.2, lambda: module_runner(
        "run_lock", lock_args(s3_server, bucket, store="both", dir=work, slots=1, slot_wait=8.5, stale_after=12)))
    assert refused.get("failed") and "db01" in refused["msg"] and "replication_host_slots" in refused["msg"], refused
    assert len(set(beats)) >= 2, beats
    # Nothing of the failed task is left: no bucket lock, no host lock of web01; the other run keeps its slot.
    assert keys(s3_server, bucket) == [] and not os.path.exists(os.path.join(work, "web01.lock"))
    assert os.listdir(os.path.join(work, "slots")) == ["0.slot"]


def test_a_slot_wait_that_loses_its_bucket_lock_fails_and_gives_the_host_lock_back(s3_server, bucket, module_runner, tmp_path):
    work = str(tmp_path / "work")
    other = module_runner("run_lock", dict(server="db01", dir=work, slots=1, controller="awx-9"))
    assert not other.get("failed"), other

    def take_over():
        # As a controller that found the lock stale would: the lock's objects are removed while web01 waits for a slot.
        os.utime(other["path"])
        for key in keys(s3_server, bucket):
            s3_server.client().delete_object(Bucket=bucket, Key=key)
    lost = while_doing(take_over, 0.1, lambda: module_runner(
        "run_lock", lock_args(s3_server, bucket, store="both", dir=work, slots=1, slot_wait=20, stale_after=3)))
    # The first keepalive (after 0.75 s, not the 20 s wait) finds the lock gone and stops the wait, naming it.
    assert lost.get("failed") and "Failed to keep the lock of server %s in bucket %s" % (SERVER, bucket) in lost["msg"], lost
    assert "went stale or another run took it over" in lost["msg"]
    assert not os.path.exists(os.path.join(work, "web01.lock")) and os.listdir(os.path.join(work, "slots")) == ["0.slot"]


def test_module_failures_name_what_to_fix_and_never_the_secret(s3_server, bucket, module_runner):
    missing = module_runner("run_lock", dict(server=SERVER, store="bucket", bucket=bucket))
    assert missing.get("failed") and "cos" in missing["msg"], missing
    wrong_secret = "wrong" + s3_server.secret_access_key[5:]
    wrong_key = module_runner("run_lock", lock_args(s3_server, bucket, cos=s3_server.cos(secret_access_key=wrong_secret)))
    assert wrong_key.get("failed") and "Failed to" in wrong_key["msg"] and "cos.secret_access_key" in wrong_key["msg"], wrong_key
    no_bucket = module_runner("run_lock", lock_args(s3_server, "t-no-such-bucket-here"))
    assert no_bucket.get("failed") and "t-no-such-bucket-here" in no_bucket["msg"], no_bucket
    for result in (missing, wrong_key, no_bucket):
        assert s3_server.secret_access_key not in str(result) and wrong_secret not in str(result)
    assert keys(s3_server, bucket) == []


# Through the role: two controllers, each with its own conversion-host directories (work, snapshots, async), share
# only the bucket. replication_lock_store=bucket puts the lock where both see it.
def controller_sites(tmp_path, s3_server, gated, disk, **extra):
    options = dict(replication_part_size_mb=5, replication_threads=1, replication_deflate_library="zlib", replication_data_path="stream",
                   replication_lock_store="bucket", replication_lock_heartbeat_every=1,
                   replication_cos=dict(endpoint=gated.endpoint, region=s3_server.region))
    options.update(extra)
    first = make_site(tmp_path / "a", s3_server, [disk], [SERVER], poll_wait=2, extra=options)
    os.makedirs(tmp_path / "b")
    return first, dataclasses.replace(first, root=str(tmp_path / "b"))


@pytest.mark.parametrize("s3_server", ["seaweedfs", "rclone"], indirect=True)
def test_second_controller_fails_clean_while_the_first_holds_the_bucket_lock(tmp_path, s3_server, gated, lock_disk):
    first, second = controller_sites(tmp_path, s3_server, gated, lock_disk)
    thread, box = start(first)
    assert gated.held.wait(400), "the first run never started its upload"
    client = client_of(s3_server)
    held = _bucket_lock.holder(client, first.bucket, KEY, 900)
    assert held is not None and held["server"] == SERVER
    # The polls send the bucket heartbeat (here at most every second) while the stage runs.
    wait_for(lambda: _bucket_lock.holder(client, first.bucket, KEY, 900)["heartbeat"] > held["heartbeat"], timeout=120)
    uploads = first.multipart_uploads()
    work = sorted(os.listdir(first.work_dir))

    run = second.run()
    assert run.status == "failed", run.stdout
    error = summary(run)[SERVER]["error"]
    assert "Failed to start replicating %s: another run %s" % (SERVER, held["token"]) in error, error
    assert "s3://%s/%s" % (first.bucket, KEY) in error and "replication_lock_wait" in error, error
    assert s3_server.secret_access_key not in run.stdout
    # Nothing of the first run was touched: its lock, upload and work dir are as they were; the second left nothing.
    assert _bucket_lock.holder(client, first.bucket, KEY, 900)["token"] == held["token"]
    assert [u["UploadId"] for u in first.multipart_uploads()] == [u["UploadId"] for u in uploads]
    assert sorted(os.listdir(first.work_dir)) == work
    # (second.leftovers() sees the first run's upload and its lock object, the .lock or its claim, which orphans() lists
    # as a key the catalog does not name.)
    assert second.leftovers() == {"uploads": [u["Key"] for u in uploads], "orphans": [held["key"]]}

    gated.gate.set()
    thread.join(600)
    assert box["run"].status == "successful", box["run"].stdout
    assert summary(box["run"])[SERVER]["status"] == "replicated"
    assert len(first.catalog(SERVER)["images"]) == 1
    # The lock is released: no lock or claim object is left (orphans() lists any key under the server's prefix).
    assert _bucket_lock.holder(client, first.bucket, KEY, 900) is None
    assert first.leftovers() == {} and second.leftovers() == {}


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_two_controllers_at_once_with_the_bucket_lock_make_one_image(tmp_path, s3_server, gated, lock_disk):
    first, second = controller_sites(tmp_path, s3_server, gated, lock_disk, replication_lock_wait=600)
    threads = [start(first), start(second)]
    assert gated.held.wait(400), "no run started its upload"
    client = client_of(s3_server)
    holding = _bucket_lock.holder(client, first.bucket, KEY, 900)["token"]
    gated.gate.set()
    for thread, _box in threads:
        thread.join(900)
    runs = [box["run"] for _thread, box in threads]
    assert [run.status for run in runs] == ["successful", "successful"], [run.stdout for run in runs]
    assert sorted(summary(run)[SERVER]["status"] for run in runs) == ["replicated", "unchanged"], [summary(run) for run in runs]
    catalog = first.catalog(SERVER)
    assert len(catalog["images"]) == 1, catalog
    assert [name for name in first.objects() if name.endswith(".qcow2")] == [catalog["images"][0]["key"]]
    assert holding and _bucket_lock.holder(client, first.bucket, KEY, 900) is None
    assert first.leftovers() == {} and second.leftovers() == {}


def test_job_progress_sends_the_bucket_heartbeat_at_most_every_n_seconds(tmp_path, s3_server, bucket, module_runner):
    client = client_of(s3_server)
    changed, held = _bucket_lock.acquire(client, bucket, KEY, record("tok-a"), 900, 0, _bucket_lock.CLAIMS)
    assert changed
    async_dir, lock = tmp_path / "async", tmp_path / "web01.lock"
    async_dir.mkdir()
    (async_dir / "j1.1").write_text('{"started": 1, "finished": 0, "ansible_job_id": "j1.1"}')
    lock.write_text("{}")

    def poll(token="tok-a", **extra):
        args = dict(jid="j1.1", async_dir=str(async_dir), wait=0, heartbeat_file=str(lock), cos=s3_server.cos(),
                    bucket_heartbeat=dict(bucket=bucket, prefix=PREFIX, server=SERVER, token=token, protocol="claims", every=600))
        args.update(extra)
        return module_runner("job_progress", args)

    first = poll()
    assert not first.get("failed") and first["bucket_heartbeat"] == {"sent": True, "held": True}, first
    beat = _bucket_lock.holder(client, bucket, KEY, 900)["heartbeat"]
    assert beat > held["heartbeat"]
    # Within `every` seconds the poll only touches the local lock: no request to the bucket.
    assert poll()["bucket_heartbeat"] == {"sent": False, "held": True}
    assert _bucket_lock.holder(client, bucket, KEY, 900)["heartbeat"] == beat
    # A lock no longer held by the token: a warning, the poll goes on, and nothing is written.
    os.unlink(_run_lock_stamp(lock))
    lost = poll(token="tok-other")
    assert not lost.get("failed") and lost["bucket_heartbeat"] == {"sent": True, "held": False}, lost
    assert "no longer held by this run" in json.dumps(lost.get("warnings")), lost  # 2.19 returns structured warnings
    assert [claim["token"] for claim in _bucket_lock.list_claims(client, bucket, KEY)] == ["tok-a"]
    # Without cos it says what is missing.
    missing = poll(cos=None)
    assert missing.get("failed") and "bucket_heartbeat needs heartbeat_file and cos" in missing["msg"], missing
    assert _bucket_lock.release(client, bucket, KEY, "tok-a") and keys(s3_server, bucket) == []


def _run_lock_stamp(lock):
    return str(lock) + ".bucket-beat"
