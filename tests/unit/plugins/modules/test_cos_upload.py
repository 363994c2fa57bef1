"""cos_upload against real S3 servers (rclone and SeaweedFS): uploads, idempotency, resume after kill -9, errors."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import pytest

from tests.conftest import SECRET_ACCESS_KEY
from tests.harness import spawn_module
from tests.peers.ports import free_port
from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _progress
from tests.contract import assert_return_contract

MIB = 1024 * 1024


def make_file(path, size_mib, seed=b"a"):
    """A file of incompressible, reproducible content."""
    block = hashlib.sha512(seed).digest() * (MIB // 64)
    with open(path, "wb") as handle:
        for index in range(size_mib):
            handle.write(hashlib.sha256(seed + str(index).encode()).digest() + block[32:])
    return str(path)


def sha256_of(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def downloaded_sha256(server, bucket, key):
    body = server.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(MIB), b""):
        digest.update(chunk)
    return digest.hexdigest()


def args(server, bucket, key, src=None, **extra):
    value = dict(cos=server.cos(), bucket=bucket, key=key)
    if src is not None:
        value["src"] = str(src)
    value.update(extra)
    return value


def pending(server, bucket, key=None):
    uploads = _cos.list_uploads(server.client(), bucket, key or "")
    return [u for u in uploads if key is None or u["key"] == key]


def wait_for_parts(server, bucket, key, process, count, timeout=120):
    """True once an unfinished upload of ``key`` holds ``count`` parts; False if ``process`` ended first or time ran out."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        uploads = pending(server, bucket, key)
        if uploads and len(client.list_parts(Bucket=bucket, Key=key, UploadId=uploads[-1]["upload_id"]).get("Parts") or []) >= count:
            return True
        time.sleep(0.05)
    return False


RETURN_KEYS = {"bucket", "key", "endpoint", "size", "sha256", "etag", "metadata", "parts", "resumed_parts",
               "uploaded_bytes", "seconds", "bytes_per_second", "changed"}


def test_small_file_round_trip_idempotent_and_check_mode(s3_server, bucket, module_runner, tmp_path):
    src = make_file(tmp_path / "small.qcow2", 2)
    key = "images/web01/small.qcow2"
    extra = dict(metadata={"source-server": "web01", "Format": "qcow2"})
    check = module_runner("cos_upload", args(s3_server, bucket, key, src, **extra), check_mode=True)
    assert check["changed"] is True and not check.get("failed"), check
    assert _cos.head(s3_server.client(), bucket, key) is None, "check mode uploaded"

    first = module_runner("cos_upload", args(s3_server, bucket, key, src, **extra))
    assert not first.get("failed"), first
    assert_return_contract("cos_upload", first, expect=RETURN_KEYS)
    assert_return_contract("cos_upload", check, expect=RETURN_KEYS)
    assert first["changed"] is True and first["parts"] == 1 and first["uploaded_bytes"] == 2 * MIB
    assert first["sha256"] == sha256_of(src) == downloaded_sha256(s3_server, bucket, key)
    stored = _cos.head(s3_server.client(), bucket, key)["metadata"]
    assert stored["created-by"] == "vmimage.replication"
    assert stored["sha256"] == first["sha256"]
    assert stored["source-server"] == "web01" and stored["format"] == "qcow2"
    assert first["metadata"] == stored

    again_check = module_runner("cos_upload", args(s3_server, bucket, key, src, **extra), check_mode=True)
    again = module_runner("cos_upload", args(s3_server, bucket, key, src, **extra))
    assert again_check["changed"] is False and again["changed"] is False, (again_check, again)
    assert again["uploaded_bytes"] == 0 and again["etag"] == first["etag"]


def test_multipart_upload_changed_content_and_progress(s3_server, bucket, module_runner, tmp_path):
    src = make_file(tmp_path / "disk.qcow2", 23)
    key = "images/web02/disk.qcow2"
    progress = tmp_path / "upload.progress"
    first = module_runner("cos_upload", args(s3_server, bucket, key, src, part_size_mb=5, concurrency=3, progress_file=str(progress)))
    assert not first.get("failed"), first
    assert first["changed"] and first["parts"] == 5 and first["resumed_parts"] == 0
    assert first["size"] == first["uploaded_bytes"] == 23 * MIB
    assert downloaded_sha256(s3_server, bucket, key) == sha256_of(src) == first["sha256"]
    record = _progress.read(str(progress))
    assert record["stage"] == "upload" and record["state"] == "finished" and record["done"] == record["total"] == 23 * MIB

    make_file(src, 23, seed=b"changed")
    second = module_runner("cos_upload", args(s3_server, bucket, key, src, part_size_mb=5, sha256=sha256_of(src)))
    assert second["changed"] is True and second["sha256"] != first["sha256"], second
    assert downloaded_sha256(s3_server, bucket, key) == sha256_of(src)
    assert _cos.head(s3_server.client(), bucket, key)["metadata"]["sha256"] == second["sha256"]
    assert pending(s3_server, bucket) == []


def test_state_absent_deletes_object_and_aborts_uploads(s3_server, bucket, module_runner, tmp_path):
    client = s3_server.client()
    key = "images/web03/gone.qcow2"
    client.put_object(Bucket=bucket, Key=key, Body=b"old image")
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    other = client.create_multipart_upload(Bucket=bucket, Key=key + ".keep")["UploadId"]

    check = module_runner("cos_upload", args(s3_server, bucket, key, state="absent"), check_mode=True)
    assert check["changed"] is True and check["deleted"] is True and check["aborted"] == [upload_id], check
    assert _cos.head(client, bucket, key) is not None and len(pending(s3_server, bucket, key)) == 1

    done = module_runner("cos_upload", args(s3_server, bucket, key, state="absent"))
    assert_return_contract("cos_upload", done, expect=["deleted", "aborted"])
    assert done["changed"] is True and done["deleted"] is True and done["aborted"] == [upload_id], done
    assert _cos.head(client, bucket, key) is None and pending(s3_server, bucket, key) == []
    assert [u["upload_id"] for u in pending(s3_server, bucket, key + ".keep")] == [other]

    again = module_runner("cos_upload", args(s3_server, bucket, key, state="absent"))
    assert again["changed"] is False and again["deleted"] is False and again["aborted"] == []
    assert module_runner("cos_upload", args(s3_server, bucket, key, state="absent"), check_mode=True)["changed"] is False


def test_killed_upload_resumes(s3_server, bucket, module_runner, tmp_path):
    src = make_file(tmp_path / "big.qcow2", 60)
    key = "images/web04/big.qcow2"
    progress = tmp_path / "upload.progress"
    module_args = args(s3_server, bucket, key, src, part_size_mb=5, concurrency=1, progress_file=str(progress))
    process = spawn_module("cos_upload", module_args, tmp_path, part_delay=0.4)
    client = s3_server.client()
    try:
        assert wait_for_parts(s3_server, bucket, key, process, 2), "the upload never stored two parts: %s" % (process.communicate(),)
        record = _progress.read(str(progress))
        assert record["stage"] == "upload" and record["state"] == "running" and record["total"] == 60 * MIB, record
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert len(pending(s3_server, bucket, key)) == 1, "the killed upload should be left to resume"
    assert _cos.head(client, bucket, key) is None

    resumed = module_runner("cos_upload", module_args)
    assert not resumed.get("failed"), resumed
    assert resumed["changed"] is True and resumed["resumed_parts"] >= 2, resumed
    assert resumed["uploaded_bytes"] < resumed["size"] == 60 * MIB
    assert resumed["uploaded_bytes"] == resumed["size"] - resumed["resumed_parts"] * 5 * MIB
    assert downloaded_sha256(s3_server, bucket, key) == sha256_of(src) == resumed["sha256"]
    assert pending(s3_server, bucket, key) == []


@pytest.mark.parametrize("case", ["secret", "access_key", "bucket", "src"])
def test_errors_name_bucket_and_endpoint_and_hide_secret(s3_server, bucket, module_runner, tmp_path, case):
    src = make_file(tmp_path / "e.img", 1)
    cos = s3_server.cos()
    target, path = bucket, src
    expected = {
        "secret": "SignatureDoesNotMatch", "access_key": "InvalidAccessKeyId", "bucket": "NoSuchBucket", "src": "does not exist",
    }[case]
    if case == "secret":
        cos["secret_access_key"] = SECRET_ACCESS_KEY[::-1]
    elif case == "access_key":
        cos["access_key_id"] = "AKIAUNKNOWN0000000001"
    elif case == "bucket":
        target = "no-such-bucket-" + bucket[2:]
    else:
        path = str(tmp_path / "missing.img")
    result = module_runner("cos_upload", dict(cos=cos, bucket=target, key="k/e.img", src=path))
    assert result.get("failed") is True, result
    assert expected in result["msg"], result["msg"]
    assert target in result["msg"] and s3_server.endpoint in result["msg"], result["msg"]
    assert result["msg"].startswith("Failed to ")
    text = json.dumps(result)
    assert SECRET_ACCESS_KEY not in text and SECRET_ACCESS_KEY[::-1] not in text
    # Ansible masks no_log values as ******** before the result is printed: a mask in the
    # message would mean the code put the secret there.
    assert "********" not in result["msg"]
    if case in ("src",):
        assert pending(s3_server, bucket) == []


def test_bad_metadata_key_is_refused(s3_server, bucket, module_runner, tmp_path):
    src = make_file(tmp_path / "m.img", 1)
    result = module_runner("cos_upload", args(s3_server, bucket, "k/m.img", src, metadata={"source server": "x"}))
    assert result.get("failed") and "source server" in result["msg"] and "lower-case" in result["msg"], result
    assert _cos.head(s3_server.client(), bucket, "k/m.img") is None


def test_api_key_without_reachable_iam_fails_clearly(s3_server, bucket, module_runner, tmp_path):
    """The IAM API-key path when nothing listens at the token endpoint (test_iam_api_key.py has the working path)."""
    api_key = "ibmApiKeyS3cretValue0123456789abcdef"
    iam = "http://127.0.0.1:%d/identity/token" % free_port()
    cos = dict(endpoint=s3_server.endpoint, region=s3_server.region, api_key=api_key, service_instance_id="crn:v1:test", iam_endpoint=iam)
    result = module_runner("cos_upload", dict(cos=cos, bucket=bucket, key="k/i.img", src=make_file(tmp_path / "i.img", 1)))
    assert result.get("failed") and result["msg"].startswith("Failed to reach bucket %s at %s: no IAM token from %s" % (bucket, s3_server.endpoint, iam))
    assert "cos.api_key" in result["msg"] and api_key not in json.dumps(result) and "********" not in result["msg"]


@pytest.mark.parametrize("module", ["cos_upload", "image_upload"])
def test_a_bucket_in_another_region_is_refused_before_anything_is_sent(s3_server, bucket, module_runner, tmp_path, module):
    from tests.peers.s3_front import RegionalFront

    src = make_file(tmp_path / "r.img", 1)
    work = tmp_path / "work"
    work.mkdir()
    extra = dict(work_dir=str(work)) if module == "image_upload" else {}
    with RegionalFront(s3_server, "eu-de-standard") as front:
        result = module_runner(module, dict(cos=s3_server.cos(endpoint=front.endpoint), bucket=bucket, key="k/r.img", src=src, **extra))
    assert result.get("failed") and result["msg"].startswith("Failed to reach bucket %s at %s: WrongRegion: the bucket lives in region eu-de, "
                                                             "not us-south" % (bucket, front.endpoint)), result
    assert result["code"] == "WrongRegion" and result["bucket_region"] == "eu-de" and "cos.region" in result["msg"]
    assert _cos.list_uploads(s3_server.client(), bucket) == [] and _cos.head(s3_server.client(), bucket, "k/r.img") is None
    with RegionalFront(s3_server, "us-south-standard") as front:  # its own region: fine
        result = module_runner(module, dict(cos=s3_server.cos(endpoint=front.endpoint), bucket=bucket, key="k/r.img", src=src, **extra))
    assert not result.get("failed"), result
