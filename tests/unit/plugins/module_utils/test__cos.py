"""_cos and _multipart: pure helpers, and upload_file against real S3 servers (failure, keep_incomplete, resume)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile
from tests.conftest import SECRET_ACCESS_KEY

MIB = 1024 * 1024


def make_file(path, size_mib, seed=b"u"):
    with open(path, "wb") as handle:
        for index in range(size_mib):
            handle.write(hashlib.sha512(seed + str(index).encode()).digest() * (MIB // 64))
    return str(path)


# ---- pure logic -----------------------------------------------------------------------------

@pytest.mark.parametrize("location, region", [
    (None, None), ("", None), ("us-south", "us-south"), ("us-south-standard", "us-south"),
    ("eu-de-smart", "eu-de"), ("jp-tok-cold", "jp-tok"), ("us-east-1", "us-east-1"),
])
def test_bucket_region(location, region):
    assert _cos.bucket_region(location) == region


class _LocationClient:
    """Stands in for GetBucketLocation only: neither local S3 server records a bucket's region."""

    def __init__(self, location):
        self.location = location

    def get_bucket_location(self, Bucket):  # noqa: N803 - the SDK's argument name
        return {"LocationConstraint": self.location}


def test_check_bucket_refuses_a_bucket_in_another_region():
    cos = {"endpoint": "https://s3.us-south.example", "region": "us-south", "secret_access_key": SECRET_ACCESS_KEY}
    with pytest.raises(ReplicationError) as info:
        _cos.check_bucket(_LocationClient("eu-de-standard"), cos, "dr-images")
    msg = info.value.msg
    assert msg.startswith("Failed to reach bucket dr-images at https://s3.us-south.example: WrongRegion")
    assert "eu-de" in msg and "cos.region" in msg and SECRET_ACCESS_KEY not in msg
    assert _cos.check_bucket(_LocationClient("us-south-smart"), cos, "dr-images") == "us-south"
    assert _cos.check_bucket(_LocationClient(None), cos, "dr-images") is None


def test_part_plan():
    assert _multipart.plan_part_size(10 * MIB, 1) == 5 * MIB
    assert _multipart.plan_part_size(100000 * MIB, 5 * MIB) == 10 * MIB
    assert _multipart.part_ranges(12, 5) == [(1, 0, 5), (2, 5, 5), (3, 10, 2)]
    assert _multipart.part_ranges(0, 5) == []


def test_object_metadata():
    meta = _cos.object_metadata({"Source-Server": "web01", "virtual-size": 10}, "ab" * 32)
    assert meta == {"source-server": "web01", "virtual-size": "10", "created-by": "vmimage.replication", "sha256": "ab" * 32}
    with pytest.raises(ReplicationError, match="source_server"):
        _cos.object_metadata({"source_server": "x"}, "0")


# ---- against the real servers ---------------------------------------------------------------

def uploads_of(client, bucket, key):
    return _cos.uploads_for_key(client, bucket, key)


class TruncatingProgress(ProgressFile):
    """A real progress file that cuts the source short after the first part is stored: the file changed midway."""

    def __init__(self, path, src):
        super().__init__(path, "upload")
        self.src = src

    def update(self, done, total=None, force=False):
        super().update(done, total, force)
        if done and os.path.getsize(self.src) > 7 * MIB:
            os.truncate(self.src, 7 * MIB)


@pytest.mark.parametrize("keep", [False, True])
def test_failed_upload_is_aborted_unless_kept(s3_server, bucket, tmp_path, keep):
    client = s3_server.client()
    src = make_file(tmp_path / "t.img", 20)
    key = "k/t.img"
    with pytest.raises(ReplicationError, match="shorter than when the upload started"):
        _cos.upload_file(client, bucket, key, src, 5 * MIB, 1, {}, progress=TruncatingProgress(str(tmp_path / "p"), src),
                         keep_incomplete=keep)
    assert _cos.head(client, bucket, key) is None
    assert len(uploads_of(client, bucket, key)) == (1 if keep else 0)
    assert _read_state(tmp_path / "p") == "failed"


def _read_state(path):
    from ansible_collections.vmimage.replication.plugins.module_utils._progress import read

    return (read(str(path)) or {}).get("state")


def test_resume_keeps_matching_parts_and_fixes_stale_metadata(s3_server, bucket, tmp_path):
    """An interrupted upload of other content: matching parts are kept, others resent, metadata rewritten."""
    client = s3_server.client()
    src = make_file(tmp_path / "r.img", 18)
    key = "k/r.img"
    old = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": "0" * 64})["UploadId"]
    newest = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"sha256": "1" * 64})["UploadId"]
    with open(src, "rb") as handle:
        data = handle.read()
    # Part size 6 MiB (not the 5 MiB asked for below): part 1 matches the file, part 2 holds other bytes.
    for number, body in ((1, data[:6 * MIB]), (2, b"x" * (6 * MIB))):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        client.upload_part(Bucket=bucket, Key=key, UploadId=newest, PartNumber=number, Body=body, ContentMD5=md5)
    result = _cos.upload_file(client, bucket, key, src, 5 * MIB, 2, {"source-server": "r"})
    if s3_server.kind == "rclone":
        # rclone streams parts to its backend and refuses to replace part 2: the upload starts afresh.
        assert result["resumed_parts"] == 0 and result["parts"] == 4 and result["uploaded_bytes"] == 18 * MIB, result
    else:
        assert result["resumed_parts"] == 1 and result["parts"] == 3 and result["uploaded_bytes"] == 12 * MIB, result
    got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest() == result["sha256"]
    meta = _cos.head(client, bucket, key)["metadata"]
    assert meta["sha256"] == result["sha256"] and meta["source-server"] == "r" and meta["created-by"] == "vmimage.replication"
    assert uploads_of(client, bucket, key) == [], "the older upload %s should have been aborted" % old


def test_list_uploads_and_abort(s3_server, bucket):
    client = s3_server.client()
    assert _cos.list_uploads(client, bucket) == []
    first = client.create_multipart_upload(Bucket=bucket, Key="a/one")["UploadId"]
    client.create_multipart_upload(Bucket=bucket, Key="b/two")
    listed = _cos.list_uploads(client, bucket, "a/")
    assert [(u["key"], u["upload_id"]) for u in listed] == [("a/one", first)]
    assert isinstance(listed[0]["initiated"], datetime.datetime)
    _cos.abort_upload(client, bucket, "a/one", first)
    _cos.abort_upload(client, bucket, "a/one", first)  # already gone: not an error
    assert [u["key"] for u in _cos.list_uploads(client, bucket)] == ["b/two"]


def test_check_bucket_on_real_servers(s3_server, bucket):
    """Neither local server reports a location: the check passes, and a missing bucket fails clearly."""
    client = s3_server.client()
    assert _cos.check_bucket(client, s3_server.cos(), bucket) is None
    with pytest.raises(ReplicationError) as info:
        _cos.check_bucket(client, s3_server.cos(), "nope-" + bucket)
    assert "NoSuchBucket" in info.value.msg and s3_server.endpoint in info.value.msg


def test_head_lower_cases_metadata(s3_server, bucket):
    client = s3_server.client()
    client.put_object(Bucket=bucket, Key="h", Body=b"x", Metadata={"Source-Server": "web01"})
    assert _cos.head(client, bucket, "h")["metadata"] == {"source-server": "web01"}
    assert _cos.head(client, bucket, "missing") is None
    assert _cos.delete_object(client, bucket, "h") is True and _cos.delete_object(client, bucket, "h") is False


@pytest.mark.parametrize("endpoint", ["not a url", "ftp//nowhere", "ftp://nowhere.example", "s3.us-south.example"])
def test_connect_names_a_bad_endpoint(endpoint):
    with pytest.raises(ReplicationError) as caught:
        _cos.connect(dict(endpoint=endpoint, access_key_id="AKIAEXAMPLE000000001", secret_access_key="s3cr3t-Value-0123456789"))
    assert "cos.endpoint %s" % endpoint in caught.value.msg and "s3cr3t" not in caught.value.msg


@pytest.mark.parametrize("copy_limit", [None, 5 * 1024 * 1024])
def test_replace_metadata_keeps_the_bytes(s3_server, bucket, copy_limit):
    # copy_limit=5 MiB makes an 11 MiB object take the multipart-copy path that objects over 5 GiB take.
    client = s3_server.client()
    body = b"".join(hashlib.sha256(b"%d" % n).digest() for n in range(11 * 1024 * 1024 // 32))
    client.put_object(Bucket=bucket, Key="k", Body=body, Metadata={"old": "1"})
    kwargs = dict(copy_limit=copy_limit, part_size=5 * 1024 * 1024) if copy_limit else {}
    if copy_limit and s3_server.kind == "rclone":  # rclone serve s3 has no UploadPartCopy: a clear error, the object intact
        with pytest.raises(ReplicationError, match="UploadPartCopy, needed above 5242880 bytes"):
            _cos.replace_metadata(client, bucket, "k", len(body), {"sha256": "x"}, **kwargs)
        assert _cos.head(client, bucket, "k")["metadata"] == {"old": "1"} and _cos.list_uploads(client, bucket) == []
        return
    _cos.replace_metadata(client, bucket, "k", len(body), {"sha256": hashlib.sha256(body).hexdigest()}, **kwargs)
    stored = _cos.head(client, bucket, "k")
    assert stored["metadata"] == {"sha256": hashlib.sha256(body).hexdigest()} and stored["size"] == len(body)
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == body
    assert _cos.list_uploads(client, bucket) == []
