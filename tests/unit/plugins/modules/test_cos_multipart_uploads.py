"""cos_multipart_uploads against real S3 servers: list, older_than, abort, check mode, errors."""

from __future__ import annotations

import datetime
import json

from ansible_collections.vmimage.replication.plugins.module_utils import _cos
from tests.conftest import SECRET_ACCESS_KEY
from tests.contract import assert_return_contract


def test_select_by_age():
    now = datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc)
    old = {"key": "a", "upload_id": "1", "time": now - datetime.timedelta(days=2)}
    new = {"key": "b", "upload_id": "2", "time": now - datetime.timedelta(seconds=10)}
    unknown = {"key": "c", "upload_id": "3", "time": None}
    assert _cos.older_than([old, new, unknown], 86400, now) == [old, unknown]
    assert _cos.older_than([old, new], 0, now) == [old, new]


def test_one_listing_pages_objects_and_uploads_under_a_prefix(s3_server, bucket):
    """Both modules list through _cos.list_under_prefix: every page, only the prefix, oldest first, the age filter."""
    client = s3_server.client()
    for index in range(3):
        client.put_object(Bucket=bucket, Key="images/o%d" % index, Body=b"x" * index)
    client.put_object(Bucket=bucket, Key="other/o", Body=b"y")
    upload = client.create_multipart_upload(Bucket=bucket, Key="images/u")["UploadId"]
    try:
        objects = _cos.list_under_prefix(PagedClient(client), bucket, "images/", "objects")
        assert sorted(o["key"] for o in objects) == ["images/o0", "images/o1", "images/o2"] and {o["size"] for o in objects} == {0, 1, 2}
        uploads = _cos.list_under_prefix(client, bucket, "images/", "uploads")
        assert [(u["key"], u["upload_id"]) for u in uploads] == [("images/u", upload)]
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        assert _cos.list_under_prefix(client, bucket, "images/", "uploads", min_age=3600 * 2, now=later) == []
        assert len(_cos.list_under_prefix(client, bucket, "images/", "objects", min_age=60, now=later)) == 3
    finally:
        client.abort_multipart_upload(Bucket=bucket, Key="images/u", UploadId=upload)


class PagedClient:
    """A client whose object listing answers one key per page, so the continuation is exercised."""

    def __init__(self, client):
        self.client = client

    def list_objects_v2(self, **kwargs):
        return self.client.list_objects_v2(MaxKeys=1, **kwargs)


def test_list_and_abort_with_older_than(s3_server, bucket, module_runner):
    client = s3_server.client()
    mine = client.create_multipart_upload(Bucket=bucket, Key="images/web01/a.qcow2")["UploadId"]
    other = client.create_multipart_upload(Bucket=bucket, Key="other/b.qcow2")["UploadId"]
    base = dict(cos=s3_server.cos(), bucket=bucket, prefix="images/")

    young = module_runner("cos_multipart_uploads", dict(base, older_than=3600, abort=True))
    assert_return_contract("cos_multipart_uploads", young)
    assert young["uploads"] == [] and young["aborted"] == [] and young["changed"] is False

    listed = module_runner("cos_multipart_uploads", dict(base, older_than=0))
    assert [(u["key"], u["upload_id"]) for u in listed["uploads"]] == [("images/web01/a.qcow2", mine)]
    assert listed["uploads"][0]["initiated"].endswith("Z") and listed["changed"] is False and listed["aborted"] == []

    check = module_runner("cos_multipart_uploads", dict(base, older_than=0, abort=True), check_mode=True)
    assert check["changed"] is True and [u["upload_id"] for u in check["aborted"]] == [mine]
    assert len(_cos.list_uploads(client, bucket)) == 2, "check mode aborted something"

    done = module_runner("cos_multipart_uploads", dict(base, older_than=0, abort=True))
    assert_return_contract("cos_multipart_uploads", done)
    assert done["changed"] is True and [u["upload_id"] for u in done["aborted"]] == [mine]
    assert [u["upload_id"] for u in _cos.list_uploads(client, bucket)] == [other]

    again = module_runner("cos_multipart_uploads", dict(base, older_than=0, abort=True))
    assert again["changed"] is False and again["aborted"] == []


def test_wrong_secret_fails_without_leaking(s3_server, bucket, module_runner):
    cos = s3_server.cos(secret_access_key=SECRET_ACCESS_KEY[::-1])
    result = module_runner("cos_multipart_uploads", dict(cos=cos, bucket=bucket, abort=True))
    assert result.get("failed") and "SignatureDoesNotMatch" in result["msg"], result
    assert bucket in result["msg"] and s3_server.endpoint in result["msg"]
    text = json.dumps(result)
    assert SECRET_ACCESS_KEY not in text and SECRET_ACCESS_KEY[::-1] not in text
    # Ansible masks no_log values as ******** before the result is printed: a mask in the
    # message would mean the code put the secret there.
    assert "********" not in result["msg"]
