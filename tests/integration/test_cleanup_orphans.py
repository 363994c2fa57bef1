# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""cleanup.yml removes the objects under a server's prefix that no catalog entry names once they are past
replication_cleanup_older_than, reports them, and leaves a young one and the catalogued images alone.

S3 has no way to back-date an object, so age is made by waiting: the old object is put before the replication
that makes the catalogued image, the young one just before cleanup.yml, and the age limit lies between the two.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.replication import CLEANUP, build_disk, make_site, summary

SERVER = "web01"
OLDER_THAN = 120  # room for a cleanup.yml run on a loaded machine (one took 57 s to list in a full parallel run)
CREATED_BY = {"created-by": "vmimage.replication"}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    return build_disk(str(tmp_path_factory.mktemp("orphans") / "disk.img"), size="32M", fill=0.5)


@pytest.mark.parametrize("s3_server", ["rclone", "seaweedfs"], indirect=True)
def test_cleanup_removes_old_uncatalogued_objects_and_reports_them(tmp_path, s3_server, small_disk):
    site = make_site(tmp_path, s3_server, [small_disk], [SERVER], poll_wait=0.3)
    client = s3_server.client()
    old = "images/%s/%s-20260101-000000.qcow2" % (SERVER, SERVER)
    young = "images/%s/%s-20260102-000000.qcow2" % (SERVER, SERVER)
    foreign = "images/%s/notes.txt" % SERVER  # not made by the collection: never touched
    client.put_object(Bucket=site.bucket, Key=old, Body=b"old upload", Metadata=CREATED_BY)
    client.put_object(Bucket=site.bucket, Key=foreign, Body=b"an operator's file")
    put_old = time.monotonic()

    run = site.run()
    assert run.status == "successful", run.stdout
    image = summary(run)[SERVER]["key"]
    time.sleep(max(0.0, OLDER_THAN + 2 - (time.monotonic() - put_old)))
    client.put_object(Bucket=site.bucket, Key=young, Body=b"young upload", Metadata=CREATED_BY)
    put_young = time.monotonic()

    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": OLDER_THAN})
    assert run.status == "successful", run.stdout
    # The young object must still have been young when the cleanup looked at it, else this run proves nothing.
    assert time.monotonic() - put_young < OLDER_THAN, "cleanup.yml took too long to tell young from old"
    assert run.custom_stats()["vmimage_replication_cleanup"] == {SERVER: {"removed_objects": [old]}}
    objects = site.objects()
    assert old not in objects
    assert young in objects and foreign in objects and image in objects
    assert [entry["key"] for entry in site.catalog(SERVER)["images"]] == [image]

    # Nothing left to remove: the report is empty and the young object still stays.
    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": OLDER_THAN * 10})
    assert run.status == "successful", run.stdout
    assert run.custom_stats()["vmimage_replication_cleanup"] == {SERVER: {"removed_objects": []}}
    assert young in site.objects()
