# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A stage module nobody follows (heartbeat file untouched for abandon_after) stops itself and cleans up."""

from __future__ import annotations

import os
import time

import pytest

from tests.harness import final_result, spawn_module
from tests.unit.plugins.modules.test_cos_upload import pending
from tests.unit.plugins.modules.test_image_upload import args, disk, work_dir  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos, _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def test_image_upload_nobody_follows_stops_itself(s3_server, bucket, tmp_path, work_dir):  # noqa: F811 - fixture
    src = disk(tmp_path, noisy_mib=30)
    key = "images/web07/web07.qcow2"
    lock = tmp_path / "web07.lock"
    lock.write_text("{}")
    started = time.monotonic()
    process = spawn_module("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5, concurrency=1,
                                                heartbeat_file=str(lock), abandon_after=1.0), tmp_path, part_delay=0.5)
    result = final_result(process)
    assert result["failed"] and "stopped itself after nobody followed it for 1 s (abandon_after" in result["msg"], result
    assert result.get("abandoned") is True
    assert time.monotonic() - started < 30
    assert pending(s3_server, bucket, key) == [] and _cos.head(s3_server.client(), bucket, key) is None
    assert not lock.exists()
    assert os.listdir(work_dir) == []


def test_image_upload_nobody_follows_releases_the_bucket_lock_too(s3_server, bucket, tmp_path, work_dir):  # noqa: F811 - fixture
    """With a lock in the bucket (cloud providers), a stage that stops itself releases it as well: no run waits for it to go stale."""
    src = disk(tmp_path, noisy_mib=30)
    key = "images/web08/web08.qcow2"
    lock = tmp_path / "web08.lock"
    lock.write_text("{}")
    client, lock_key = s3_server.client(), _bucket_lock.lock_key("images/", "web08")
    now = time.time()
    record = dict(token="tok-web08", host="ctl", pid=1, started=now, heartbeat=now, server="web08")
    changed, holder = _bucket_lock.acquire(client, bucket, lock_key, record, 900.0, 0.0, "claims")
    assert changed and holder["token"] == "tok-web08"
    process = spawn_module("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5, concurrency=1,
                                                heartbeat_file=str(lock), abandon_after=1.0,
                                                bucket_lock=dict(bucket=bucket, key=lock_key, token="tok-web08")),
                           tmp_path, part_delay=0.5)
    result = final_result(process)
    assert result.get("abandoned") is True and "s3://%s/%s" % (bucket, lock_key) in result["msg"], result
    assert _bucket_lock.holder(client, bucket, lock_key, 900.0) is None
    assert pending(s3_server, bucket, key) == [] and not lock.exists()


def test_a_bucket_lock_another_run_holds_is_left_alone(s3_server, bucket, tmp_path, work_dir):  # noqa: F811 - fixture
    src = disk(tmp_path, noisy_mib=30)
    lock = tmp_path / "web09.lock"
    lock.write_text("{}")
    client, lock_key = s3_server.client(), _bucket_lock.lock_key("images/", "web09")
    now = time.time()
    _bucket_lock.acquire(client, bucket, lock_key, dict(token="other-run", host="ctl", pid=1, started=now, heartbeat=now, server="web09"),
                         900.0, 0.0, "claims")
    process = spawn_module("image_upload", args(s3_server, bucket, "images/web09/web09.qcow2", src, work_dir, part_size_mb=5,
                                                concurrency=1, heartbeat_file=str(lock), abandon_after=1.0,
                                                bucket_lock=dict(bucket=bucket, key=lock_key, token="tok-web09")),
                           tmp_path, part_delay=0.5)
    result = final_result(process)
    assert result.get("abandoned") is True and lock_key not in result["msg"], result
    assert _bucket_lock.holder(client, bucket, lock_key, 900.0)["token"] == "other-run"


class _Module:
    def __init__(self, **params):
        self.params = params


def test_undo_object_deletes_only_what_the_run_wrote_and_names_what_it_could_not(s3_rclone, tmp_path):
    """What an upload stage that ended after its controller was gone removes (the object nobody will catalogue)."""
    bucket = s3_rclone.make_bucket("t-undo-%d" % os.getpid())
    client, key = s3_rclone.client(), "images/web10/web10.qcow2"
    client.put_object(Bucket=bucket, Key=key, Body=b"qcow2")
    module = _Module(cos=s3_rclone.cos(), bucket=bucket, key=key)
    _watchdog.undo_object(module, dict(changed=False))  # an object this run did not write (an unchanged re-run) stays
    assert _cos.head(client, bucket, key) is not None
    _watchdog.undo_object(module, dict(changed=True))
    assert _cos.head(client, bucket, key) is None
    gone = _Module(cos=s3_rclone.cos(), bucket="no-such-bucket-undo", key=key)
    with pytest.raises(ReplicationError) as err:
        _watchdog.undo_object(gone, dict(changed=True))
    assert err.value.msg.startswith("it could not delete s3://no-such-bucket-undo/%s" % key) and "delete it by hand" in err.value.msg
    assert s3_rclone.cos()["secret_access_key"] not in err.value.msg
