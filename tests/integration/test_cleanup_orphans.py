# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""cleanup.yml removes the objects under a server's prefix that no catalog entry names once they are past
replication_cleanup_older_than, reports them, and leaves a young one and the catalogued images alone.

S3 has no way to back-date an object, but ``rclone serve s3`` takes an object's modification time from its
``mtime`` metadata (rclone's own convention) and lists that as LastModified: the old object is put a day old, so
nothing waits for age. The precondition is checked, so a server that stops doing this fails here, not silently.
"""

from __future__ import annotations

import datetime
import time

import pytest

from tests.integration.replication import CLEANUP, build_disk, make_site, summary

SERVER = "web01"
OLDER_THAN = 3600
CREATED_BY = {"created-by": "vmimage.replication"}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    return build_disk(str(tmp_path_factory.mktemp("orphans") / "disk.img"), size="32M", fill=0.5)


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_cleanup_removes_old_uncatalogued_objects_and_reports_them(tmp_path, s3_server, small_disk):
    site = make_site(tmp_path, s3_server, [small_disk], [SERVER])
    client = s3_server.client()
    old = "images/%s/%s-20260101-000000.qcow2" % (SERVER, SERVER)
    young = "images/%s/%s-20260102-000000.qcow2" % (SERVER, SERVER)
    foreign = "images/%s/notes.txt" % SERVER  # not made by the collection: never touched
    day_ago = "%d" % (time.time() - 86400)
    client.put_object(Bucket=site.bucket, Key=old, Body=b"old upload", Metadata=dict(CREATED_BY, mtime=day_ago))
    client.put_object(Bucket=site.bucket, Key=foreign, Body=b"an operator's file", Metadata={"mtime": day_ago})
    listed = {item["Key"]: item["LastModified"] for item in client.list_objects_v2(Bucket=site.bucket)["Contents"]}
    now = datetime.datetime.now(datetime.timezone.utc)
    assert (now - listed[old]).total_seconds() > OLDER_THAN * 2, "the S3 server did not back-date the old object"

    run = site.run()
    assert run.status == "successful", run.stdout
    image = summary(run)[SERVER]["key"]
    client.put_object(Bucket=site.bucket, Key=young, Body=b"young upload", Metadata=CREATED_BY)

    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": OLDER_THAN})
    assert run.status == "successful", run.stdout
    assert run.custom_stats()["vmimage_replication_cleanup"] == {SERVER: {"removed_objects": [old]}}
    objects = site.objects()
    assert old not in objects
    assert young in objects and foreign in objects and image in objects
    assert [entry["key"] for entry in site.catalog(SERVER)["images"]] == [image]

    # Nothing left to remove: the report is empty and the young object still stays.
    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": OLDER_THAN})
    assert run.status == "successful", run.stdout
    assert run.custom_stats()["vmimage_replication_cleanup"] == {SERVER: {"removed_objects": []}}
    assert young in site.objects()
