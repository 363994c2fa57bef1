"""Buckets whose ETags are not MD5s (SSE-KMS default encryption, emulated by tests.peers.sse_kms before a real server)."""

from __future__ import annotations

import hashlib

import pytest

from tests.peers.sse_kms import KmsBucketFront
from tests.unit.plugins.modules.test_cos_upload import downloaded_sha256, make_file, pending
from tests.unit.plugins.modules.test_image_upload import disk, downloaded_matches
from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MIB = 1024 * 1024


@pytest.fixture
def kms(s3_server):
    with KmsBucketFront(s3_server) as front:
        yield front


def test_uploads_to_a_kms_bucket_succeed(kms, s3_server, bucket, module_runner, tmp_path):
    cos = s3_server.cos(endpoint=kms.endpoint)
    src = make_file(tmp_path / "a.img", 12)
    uploaded = module_runner("cos_upload", dict(cos=cos, bucket=bucket, key="k/a.img", src=src, part_size_mb=5))
    assert not uploaded.get("failed"), uploaded
    assert uploaded["parts"] == 3 and downloaded_sha256(s3_server, bucket, "k/a.img") == uploaded["sha256"]
    work = tmp_path / "work"
    work.mkdir()
    source = disk(tmp_path, noisy_mib=12)
    streamed = module_runner("image_upload", dict(cos=cos, bucket=bucket, key="k/b.qcow2", src=source, work_dir=str(work), part_size_mb=5))
    assert not streamed.get("failed"), streamed["msg"]
    assert streamed["parts"] >= 3 and downloaded_matches(s3_server, bucket, "k/b.qcow2", source, tmp_path)
    # The ETags the client saw were not MD5s: the front did stand in.
    seen = _cos.head(_cos.connect(cos), bucket, "k/b.qcow2")["etag"]
    assert seen != _cos.head(s3_server.client(), bucket, "k/b.qcow2")["etag"]
    assert pending(s3_server, bucket) == []


def test_an_etag_that_is_not_the_md5_without_encryption_is_an_error(s3_server, bucket, tmp_path):
    """Only an endpoint that says the part is encrypted may answer an ETag other than its MD5."""

    class Lying:
        def upload_part(self, **kwargs):
            return {"ETag": '"%s"' % hashlib.md5(b"something else").hexdigest()}  # nosec - test data
    fd_path = make_file(tmp_path / "p.img", 1)
    with open(fd_path, "rb") as handle:
        with pytest.raises(ReplicationError, match="the endpoint answered ETag"):
            counter = _multipart.Counter(None, 0)
            _multipart.send_part(Lying(), bucket, "k", "u", handle.fileno(), fd_path, 1, 0, MIB, counter, _Never())


class _Never:
    @staticmethod
    def is_set():
        return False
