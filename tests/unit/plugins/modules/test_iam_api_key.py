"""The IBM Cloud API-key path end to end: ibm-cos-sdk gets IAM tokens from tests.peers.iam and uploads through its bearer S3 front."""

from __future__ import annotations

import json

import pytest

from tests.peers.iam import IamPeer
from tests.unit.plugins.modules.test_cos_upload import downloaded_sha256, make_file, pending
from tests.unit.plugins.modules.test_image_upload import disk
from ansible_collections.vmimage.replication.plugins.module_utils import _cos

API_KEY = "ibmApiKeyS3cretValue0123456789abcdef"
INSTANCE = "crn:v1:bluemix:public:cloud-object-storage:global:a/0123:instance-1::"


@pytest.fixture
def iam(s3_server):
    with IamPeer(API_KEY, s3_server) as peer:
        yield peer


def api_key_cos(iam, api_key=API_KEY):
    return dict(endpoint=iam.s3_endpoint, region="us-south", api_key=api_key, service_instance_id=INSTANCE, iam_endpoint=iam.token_url)


def test_cos_upload_and_image_upload_with_an_api_key(iam, s3_server, bucket, module_runner, tmp_path):
    src = make_file(tmp_path / "a.img", 12)
    uploaded = module_runner("cos_upload", dict(cos=api_key_cos(iam), bucket=bucket, key="k/a.img", src=src, part_size_mb=5))
    assert not uploaded.get("failed"), uploaded
    assert uploaded["parts"] == 3 and downloaded_sha256(s3_server, bucket, "k/a.img") == uploaded["sha256"]
    work = tmp_path / "work"
    work.mkdir()
    streamed = module_runner("image_upload", dict(cos=api_key_cos(iam), bucket=bucket, key="k/b.qcow2", src=disk(tmp_path, noisy_mib=12),
                                                  work_dir=str(work), part_size_mb=5))
    assert not streamed.get("failed"), streamed
    assert streamed["parts"] >= 3 and _cos.head(s3_server.client(), bucket, "k/b.qcow2")["metadata"]["sha256"] == streamed["sha256"]
    assert iam.issued >= 2 and iam.denied == 0, "every request went through the bearer front with an IAM token"
    for result in (uploaded, streamed):
        assert API_KEY not in json.dumps(result)


def test_a_wrong_api_key_fails_clearly_and_hides_the_key(iam, bucket, module_runner, tmp_path):
    wrong = "ibmApiKeyWrongValue9876543210fedcba"
    result = module_runner("cos_upload", dict(cos=api_key_cos(iam, wrong), bucket=bucket, key="k/c.img", src=make_file(tmp_path / "c.img", 1)))
    assert result.get("failed") and result["msg"].startswith("Failed to reach bucket %s at %s: no IAM token from %s" % (bucket, iam.s3_endpoint,
                                                                                                                        iam.token_url)), result
    assert "cos.api_key" in result["msg"] and "BXNIM0415E" in result["msg"]
    assert wrong not in json.dumps(result) and iam.issued == 0


def test_requests_without_a_valid_token_are_refused(iam, bucket):
    client = _cos.connect(dict(endpoint=iam.s3_endpoint, region="us-south", access_key_id="AKIAVMIMAGE7TESTKEY01",
                               secret_access_key="not-a-bearer-token-just-hmac-keys-000000"))
    with pytest.raises(_cos.ClientError, match="AccessDenied"):
        client.list_objects_v2(Bucket=bucket)
    with pytest.raises(_cos.ClientError, match="403"):  # a HEAD answer has no body to name the error
        client.head_bucket(Bucket=bucket)
    assert iam.denied >= 1 and pending(iam.upstream, bucket) == []
