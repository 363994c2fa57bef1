# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""snapshot_copy against moto server (EC2, KMS): copies, idempotency, retention, slow copies, bad input."""

from __future__ import annotations

import datetime
import json

import pytest

from tests.contract import assert_return_contract
from tests.harness import run_module
from tests.peers import moto

SRC, DST, DST2 = "eu-west-1", "eu-central-1", "eu-north-1"
P = "vmimage.replication/"


def make_snapshots(server, count, tags, zone="eu-west-1a"):
    ec2 = server.client("ec2", SRC)
    ids = []
    for index in range(count):
        volume = ec2.create_volume(Size=1 + index, AvailabilityZone=zone, VolumeType="gp3", Iops=3000)
        snap = ec2.create_snapshot(VolumeId=volume["VolumeId"], TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
        ids.append(snap["SnapshotId"])
    return ids


def args(server, **extra):
    value = server.auth(region=SRC, destination_regions=[DST], tags={"backup": "nightly"}, retention_days=7, wait_sleep=0.01,
                        wait_timeout=60)
    value.update(extra)
    return value


def copies_in(server, region):
    found = server.client("ec2", region).describe_snapshots(OwnerIds=["self"])["Snapshots"]
    return {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", [])} for s in found}


def test_first_run_copies_n_second_copies_nothing(moto_server):
    sources = make_snapshots(moto_server, 3, {"backup": "nightly", "app": "db"})
    make_snapshots(moto_server, 1, {"backup": "weekly"})
    a = args(moto_server, destination_regions=[DST, DST2])

    preview = run_module("snapshot_copy", a, check_mode=True)
    assert preview["changed"] is True and len(preview["copied"]) == 6, preview
    assert copies_in(moto_server, DST) == {}

    first = run_module("snapshot_copy", a)
    assert first["changed"] is True and len(first["copied"]) == 6, first
    assert sorted(first["source_snapshots"]) == sorted(sources)
    tags = list(copies_in(moto_server, DST).values())
    assert sorted(t[P + "origin-snapshot-id"] for t in tags) == sorted(sources)
    one = tags[0]
    assert one["created-by"] == "vmimage.replication" and one[P + "origin-region"] == SRC and one["app"] == "db"
    assert one[P + "volume-type"] == "gp3" and one[P + "volume-iops"] == "3000" and one[P + "availability-zone"] == "eu-west-1a"
    assert one[P + "selector"] == "tags:backup=nightly" and one[P + "start-time"].endswith("Z")

    second = run_module("snapshot_copy", a)
    for result in (preview, first, second):
        assert_return_contract("snapshot_copy", result)
    assert second["changed"] is False and second["copied"] == [] and second["deleted"] == [], second
    assert len(second["present"]) == 6
    assert run_module("snapshot_copy", a, check_mode=True)["changed"] is False
    assert moto.SECRET_KEY not in json.dumps([preview, first, second])


def _old_copy(server, source_id, days, selector="tags:backup=nightly", volume_id="vol-0123456789abcdef0"):
    """A copy as an earlier run made it, its origin ``days`` old (the tags carry the origin's time)."""
    start = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = {"created-by": "vmimage.replication", P + "origin-snapshot-id": "snap-0ld%014d" % days, P + "origin-region": SRC,
            P + "start-time": start, P + "selector": selector, P + "volume-id": volume_id}
    return server.client("ec2", DST).copy_snapshot(SourceSnapshotId=source_id, SourceRegion=SRC, TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])["SnapshotId"]


def test_expired_copy_deleted_foreign_and_other_jobs_kept(moto_server):
    (source,) = make_snapshots(moto_server, 1, {"backup": "nightly"})
    volume_id = moto_server.client("ec2", SRC).describe_snapshots(SnapshotIds=[source])["Snapshots"][0]["VolumeId"]
    expired = _old_copy(moto_server, source, 30, volume_id=volume_id)
    recent = _old_copy(moto_server, source, 3, volume_id=volume_id)
    other_job = _old_copy(moto_server, source, 40, selector="tags:backup=weekly", volume_id=volume_id)
    # Looks like ours (same description and name), but the collection did not make it.
    foreign = moto_server.client("ec2", DST).copy_snapshot(
        SourceSnapshotId=source, SourceRegion=SRC, Description="Copy of %s from %s (vmimage.replication)" % (source, SRC),
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
            {"Key": "Name", "Value": "vmimage.replication-copy"}, {"Key": P + "start-time", "Value": "2001-01-01T00:00:00Z"}]}])["SnapshotId"]
    preview = run_module("snapshot_copy", args(moto_server), check_mode=True)
    assert [d["id"] for d in preview["deleted"]] == [expired] and len(preview["copied"]) == 1, preview
    assert expired in copies_in(moto_server, DST)

    result = run_module("snapshot_copy", args(moto_server))
    assert result["changed"] is True and [d["id"] for d in result["deleted"]] == [expired], result
    left = copies_in(moto_server, DST)
    assert expired not in left and {recent, other_job, foreign} <= set(left)

    with_count = run_module("snapshot_copy", args(moto_server, retention_days=None, retention_count=1))
    assert [d["id"] for d in with_count["deleted"]] == [recent], with_count
    assert {other_job, foreign} <= set(copies_in(moto_server, DST))


def test_a_copy_slower_than_the_sdk_waiter_succeeds_within_the_concurrency_limit(moto_server):
    """Each copy reports 'pending' for 45 looks: more than botocore's snapshot_completed waiter tries (40)."""
    make_snapshots(moto_server, 3, {"backup": "nightly"})
    front = moto.SlowCopies(moto_server.endpoint, polls=45)
    try:
        result = run_module("snapshot_copy", args(moto_server, endpoint_url=front.endpoint, max_concurrent_copies=2))
    finally:
        front.stop()
    assert result["changed"] is True and len(result["copied"]) == 3, result
    assert all(c["state"] == "completed" for c in result["copied"])
    assert len(front.looks) == 3 and min(front.looks.values()) > 45
    assert front.max_pending == 2  # two in flight at once, never three


def test_wait_false_starts_within_the_limit_and_the_next_run_finishes(moto_server):
    make_snapshots(moto_server, 3, {"backup": "nightly"})
    front = moto.SlowCopies(moto_server.endpoint, polls=1000)
    try:
        started = run_module("snapshot_copy", args(moto_server, endpoint_url=front.endpoint, max_concurrent_copies=2, wait=False))
    finally:
        front.stop()
    assert started["changed"] is True and len(started["copied"]) == 2 and len(started["pending"]) == 3, started
    rest = run_module("snapshot_copy", args(moto_server))
    assert len(rest["copied"]) == 1 and len(rest["present"]) == 2


def test_kms_key_of_the_destination_encrypts_the_copies(moto_server):
    make_snapshots(moto_server, 1, {"backup": "nightly"})
    key = moto_server.client("kms", DST).create_key()["KeyMetadata"]
    result = run_module("snapshot_copy", args(moto_server, kms_key_id=key["KeyId"]))
    assert result["changed"] is True, result
    (snap,) = moto_server.client("ec2", DST).describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert snap["Encrypted"] is True


@pytest.mark.parametrize("bad, expected", [
    (dict(region="eu-wast-1"), "no such region"),
    (dict(destination_regions=["mars-north-1"]), "destination region 'mars-north-1': no such region"),
    (dict(destination_regions=[SRC]), "lists the source region"),
    (dict(kms_key_id="0c3e1a5e-0000-4000-8000-000000000000"), "Failed to find KMS key"),
    (dict(kms_key_id="arn:aws:kms:eu-west-1:123456789012:key/0c3e1a5e-0000-4000-8000-000000000000"), "the key is in region eu-west-1"),
    (dict(retention_days=0), "retention_days 0 would delete every copy"),
    (dict(retention_days=None, retention_count=0), "retention_count 0 would delete every copy"),
    (dict(max_concurrent_copies=50), "max_concurrent_copies=50 is outside 1..20"),
    (dict(tags={}), "the selector is empty"),
])
def test_bad_input_fails_clearly_and_changes_nothing(moto_server, bad, expected):
    make_snapshots(moto_server, 1, {"backup": "nightly"})
    result = run_module("snapshot_copy", args(moto_server, **bad))
    assert result.get("failed") is True and expected in result["msg"], result
    assert moto.SECRET_KEY not in json.dumps(result)
    assert copies_in(moto_server, DST) == {}


def test_a_selector_that_matches_nothing_says_so(moto_server):
    make_snapshots(moto_server, 1, {"backup": "weekly"})
    result = run_module("snapshot_copy", args(moto_server))
    assert not result.get("failed") and result["changed"] is False and result["msg"].startswith("nothing to copy"), result


def test_opt_out_by_environment(moto_server, monkeypatch):
    make_snapshots(moto_server, 1, {"backup": "nightly"})
    monkeypatch.setenv("SNAPSHOT_COPY_DISABLED", "true")
    result = run_module("snapshot_copy", args(moto_server))
    assert result["changed"] is False and result["disabled"] is True, result
    assert_return_contract("snapshot_copy", result)
    assert copies_in(moto_server, DST) == {}
    monkeypatch.setenv("SNAPSHOT_COPY_DISABLED", "false")
    assert run_module("snapshot_copy", args(moto_server))["changed"] is True


def test_amazon_aws_conventions_environment_and_profile(moto_server, monkeypatch, tmp_path):
    make_snapshots(moto_server, 1, {"backup": "nightly"})
    base = dict(destination_regions=[DST], tags={"backup": "nightly"}, retention_days=7, wait_sleep=0.01)
    monkeypatch.setenv("AWS_REGION", SRC)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.SECRET_KEY)
    from_env = run_module("snapshot_copy", base, check_mode=True)
    assert from_env["changed"] is True and len(from_env["copied"]) == 1, from_env
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    credentials = tmp_path / "credentials"
    credentials.write_text("[dr]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (moto.ACCESS_KEY, moto.SECRET_KEY))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    assert run_module("snapshot_copy", dict(base, profile="dr"), check_mode=True)["changed"] is True
    missing = run_module("snapshot_copy", dict(base, profile="nope"))
    assert missing.get("failed") and "Failed to open AWS profile 'nope'" in missing["msg"], missing
    assert moto.SECRET_KEY not in json.dumps([from_env, missing])


def test_resource_limit_exceeded_backs_off_and_every_copy_is_made(moto_server):
    """The account's copy quota (here 2, answered as AWS answers it) is below max_concurrent_copies: the run waits and finishes."""
    make_snapshots(moto_server, 4, {"backup": "nightly"})
    front = moto.SlowCopies(moto_server.endpoint, polls=5, quota=2)
    try:
        result = run_module("snapshot_copy", args(moto_server, endpoint_url=front.endpoint, max_concurrent_copies=5))
    finally:
        front.stop()
    assert result["changed"] is True and len(result["copied"]) == 4, result
    assert front.refused >= 1 and front.max_pending <= 2


def test_no_credentials_is_a_clear_error(moto_server, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = run_module("snapshot_copy", dict(region=SRC, endpoint_url=moto_server.endpoint, destination_regions=[DST], tags={"b": "n"},
                                              retention_days=7))
    assert result.get("failed") and "Failed to copy snapshots: no AWS credentials found" in result["msg"], result
