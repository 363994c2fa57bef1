# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""cos_object_prune against a real S3 server (rclone): retention per source server, only what the collection made, check mode, errors."""

from __future__ import annotations

import json
import uuid

from ansible_collections.vmimage.replication.plugins.module_utils import _object_prune

MADE = {"created-by": "vmimage.replication", "format": "ova"}


def _put(client, bucket, key, server, when, **meta):
    metadata = dict(MADE, **{"source-server": server, "snapshot-time": when})
    metadata.update(meta)
    client.put_object(Bucket=bucket, Key=key, Body=b"x", Metadata={k: v for k, v in metadata.items() if v is not None})


def _keys(client, bucket):
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents") or [])


def test_prunes_only_what_the_collection_made_past_retention(s3_rclone, module_runner):
    bucket = s3_rclone.make_bucket("prune-%s" % uuid.uuid4().hex[:12])
    client = s3_rclone.client()
    for day in (1, 2, 3):
        _put(client, bucket, "images/a/a-2026010%d.ova" % day, "a", "2026-01-0%dT00:00:00Z" % day)
    _put(client, bucket, "images/b/b-20250101.ova", "b", "2025-01-01T00:00:00Z")
    _put(client, bucket, "images/a/mine.ova", "a", "2020-01-01T00:00:00Z", **{"created-by": None})  # not made by the collection
    _put(client, bucket, "images/a/a-20200101.qcow2", "a", "2020-01-01T00:00:00Z", format="qcow2")
    _put(client, bucket, "other/a-20200101.ova", "a", "2020-01-01T00:00:00Z")  # outside the prefix
    before = _keys(client, bucket)
    args = dict(cos=s3_rclone.cos(), bucket=bucket, prefix="images/", format="ova", keep_last=1)

    check = module_runner("cos_object_prune", args, check_mode=True)
    assert check["changed"] and [d["key"] for d in check["deleted"]] == ["images/a/a-20260101.ova", "images/a/a-20260102.ova"], check
    assert _keys(client, bucket) == before

    young = module_runner("cos_object_prune", dict(args, keep_days=100000))  # none is that old
    assert not young["changed"] and young["deleted"] == [] and _keys(client, bucket) == before

    done = module_runner("cos_object_prune", args)
    assert done["changed"] and done["deleted"] == check["deleted"] and done["deleted"][0]["server"] == "a"
    assert _keys(client, bucket) == sorted(set(before) - {"images/a/a-20260101.ova", "images/a/a-20260102.ova"})
    assert sorted(done["kept"]) == ["images/a/a-20260103.ova", "images/b/b-20250101.ova"]
    again = module_runner("cos_object_prune", args)
    assert not again["changed"] and again["deleted"] == []


def test_errors_say_what_to_fix_and_hide_the_secret(s3_rclone, module_runner):
    bucket = s3_rclone.make_bucket("prune-%s" % uuid.uuid4().hex[:12])
    bad = module_runner("cos_object_prune", dict(cos=s3_rclone.cos(), bucket=bucket, prefix="images/", keep_last=0))
    assert bad["failed"] and "keep_last must be at least 1" in bad["msg"], bad
    missing = module_runner("cos_object_prune", dict(cos=s3_rclone.cos(), bucket=bucket + "-none", prefix="images/"))
    assert missing["failed"] and bucket + "-none" in missing["msg"], missing
    for result in (bad, missing):
        assert s3_rclone.secret_access_key not in json.dumps(result)


def test_a_snapshot_time_that_is_not_a_time_falls_back_to_the_last_modification():
    assert _object_prune._time("yesterday", "2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"  # pylint: disable=protected-access
    assert _object_prune._time("20260102-030405", None) == "2026-01-02T03:04:05Z"  # pylint: disable=protected-access
