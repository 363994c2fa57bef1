# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""snapshot_copy with a Velero selector: backups read from Velero's bucket (moto S3), snapshots copied (moto EC2)."""

from __future__ import annotations

import pytest

from tests.harness import run_module
from tests.peers.moto import write_velero_backup

SRC, DST = "eu-west-1", "eu-central-1"
BUCKET = "velero-backups"


def pv_snapshot(server, pv, phase="Completed"):
    ec2 = server.client("ec2", SRC)
    volume = ec2.create_volume(Size=2, AvailabilityZone="eu-west-1b")
    snap = ec2.create_snapshot(VolumeId=volume["VolumeId"], TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "kubernetes.io/created-for/pvc/name", "Value": "data-" + pv}, {"Key": "kubernetes.io/created-for/pvc/namespace", "Value": "shop"}]}])
    return dict(snapshot_id=snap["SnapshotId"], pv=pv, volume_id=volume["VolumeId"], volume_type="io1", iops=500, zone="eu-west-1b",
                phase=phase)


@pytest.fixture
def velero(moto_server):
    s3 = moto_server.client("s3", SRC)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": SRC})
    daily1 = [pv_snapshot(moto_server, "pv-a"), pv_snapshot(moto_server, "pv-b")]
    daily2 = [pv_snapshot(moto_server, "pv-a"), pv_snapshot(moto_server, "pv-b"), pv_snapshot(moto_server, "pv-c", phase="Failed")]
    failed = [pv_snapshot(moto_server, "pv-a")]
    weekly = [pv_snapshot(moto_server, "pv-a")]
    write_velero_backup(s3, BUCKET, "daily-20260309010000", "daily", daily1, prefix="cluster1")
    write_velero_backup(s3, BUCKET, "daily-20260310010000", "daily", daily2, prefix="cluster1")
    write_velero_backup(s3, BUCKET, "daily-20260311010000", "daily", failed, phase="PartiallyFailed", prefix="cluster1")
    write_velero_backup(s3, BUCKET, "weekly-20260308010000", "weekly", weekly, prefix="cluster1")
    # Named like the schedule's backups but made by hand (no schedule label).
    write_velero_backup(s3, BUCKET, "daily-manual", None, [pv_snapshot(moto_server, "pv-a")], prefix="cluster1")
    return dict(wanted=sorted(s["snapshot_id"] for s in daily1 + daily2[:2]), daily2=daily2)


def args(server, **velero):
    value = dict(bucket=BUCKET, prefix="cluster1", schedule="daily")
    value.update(velero)
    value = {k: v for k, v in value.items() if v is not None}
    return server.auth(region=SRC, destination_regions=[DST], velero=value, retention_days=30, wait_sleep=0.01, wait_timeout=60)


def test_the_completed_snapshots_of_a_schedule_are_copied_once(moto_server, velero):
    first = run_module("snapshot_copy", args(moto_server))
    assert first["changed"] is True and sorted(first["source_snapshots"]) == velero["wanted"], first
    assert first["selector"] == "velero:daily"
    copies = moto_server.client("ec2", DST).describe_snapshots(OwnerIds=["self"])["Snapshots"]
    tags = {t["Key"]: t["Value"] for t in copies[0]["Tags"]}
    assert tags["velero.io/schedule-name"] == "daily" and tags["velero.io/backup"].startswith("daily-2026")
    assert tags["vmimage.replication/volume-type"] == "io1" and tags["vmimage.replication/volume-iops"] == "500"
    assert tags["vmimage.replication/availability-zone"] == "eu-west-1b" and tags["kubernetes.io/created-for/pvc/namespace"] == "shop"
    second = run_module("snapshot_copy", args(moto_server))
    assert second["changed"] is False and second["copied"] == [], second


def test_one_backup_by_name(moto_server, velero):
    result = run_module("snapshot_copy", args(moto_server, schedule=None, backup="daily-20260310010000"))
    assert not result.get("failed"), result
    assert sorted(result["source_snapshots"]) == sorted(s["snapshot_id"] for s in velero["daily2"][:2]), result
    assert result["selector"] == "velero:backup=daily-20260310010000"


def test_a_backup_deleted_from_ec2_is_skipped(moto_server, velero):
    moto_server.client("ec2", SRC).delete_snapshot(SnapshotId=velero["wanted"][0])
    result = run_module("snapshot_copy", args(moto_server))
    assert sorted(result["source_snapshots"]) == velero["wanted"][1:], result


@pytest.mark.parametrize("bad, expected", [
    (dict(schedule=None, backup="daily-20990101000000"), "Failed to find Velero backup daily-20990101000000"),
    (dict(bucket="no-such-bucket"), "no-such-bucket"),
])
def test_bad_velero_input(moto_server, velero, bad, expected):
    result = run_module("snapshot_copy", args(moto_server, **bad))
    assert result.get("failed") and expected in result["msg"], result


def test_a_schedule_with_no_backups_is_nothing_to_copy(moto_server, velero):
    result = run_module("snapshot_copy", args(moto_server, schedule="hourly"))
    assert not result.get("failed") and result["changed"] is False and result["msg"].startswith("nothing to copy"), result


def test_opt_out_option_and_environment_are_one_switch(moto_server, velero, monkeypatch):
    assert run_module("snapshot_copy", dict(args(moto_server), disabled=True))["disabled"] is True
    monkeypatch.setenv("SNAPSHOT_COPY_DISABLED", "1")
    assert run_module("snapshot_copy", args(moto_server))["msg"].startswith("disabled")
    assert moto_server.client("ec2", DST).describe_snapshots(OwnerIds=["self"])["Snapshots"] == []


def test_a_backup_not_in_velero_format_fails_clearly(moto_server, velero):
    s3 = moto_server.client("s3", SRC)
    s3.put_object(Bucket=BUCKET, Key="cluster1/backups/daily-20260312010000/velero-backup.json", Body=b"{}")
    s3.put_object(Bucket=BUCKET, Key="cluster1/backups/daily-20260312010000/daily-20260312010000-volumesnapshots.json.gz", Body=b"not gzip")
    result = run_module("snapshot_copy", args(moto_server))
    assert result.get("failed") and "Failed to read Velero backup daily-20260312010000" in result["msg"], result
