"""Role-level resume: an upload refused half-way is kept (replication_keep_incomplete_uploads) and the next run continues it.

The failure is injected deterministically by tests/peers/faulty_s3.py, a reverse proxy in front of the real
S3 server that lets the first n UploadPart requests through and answers the later ones with 403 AccessDenied.
"""

from __future__ import annotations

import io
import os
import re

import pytest

from tests.integration.replication import build_disk, make_site, summary
from tests.peers.faulty_s3 import FaultyS3

SERVER = "web01"
PART_MB = 5
KEPT_PARTS = 2


@pytest.fixture(scope="module")
def resume_disk(tmp_path_factory):
    """A real ext4 disk whose compressed image needs several 5 MiB parts; each test works on a copy."""
    return build_disk(str(tmp_path_factory.mktemp("resume") / "disk.img"), size="256M", fill=0.5)


@pytest.fixture
def proxy(s3_server):
    with FaultyS3(s3_server.endpoint) as faulty:
        yield faulty


# Both role tests run against both S3 servers, each server with one of the two data paths (stream:
# image_upload; staged: qemu_convert then cos_upload) and the other path in the other test, so that every
# server and every upload module is covered by both tests in about half the time of all four pairs.
RESUME_CASES = [pytest.param("rclone", "stream", id="rclone-stream"), pytest.param("seaweedfs", "staged", id="seaweedfs-staged")]
CLEANUP_CASES = [pytest.param("rclone", "staged", id="rclone-staged"), pytest.param("seaweedfs", "stream", id="seaweedfs-stream")]


def through_proxy(tmp_path, s3_server, proxy, disk, **extra):
    """A site of one server whose role talks to the S3 server through the proxy (the test's own checks do not)."""
    options = dict(replication_part_size_mb=PART_MB, replication_concurrency=2,
                   replication_cos=dict(endpoint=proxy.endpoint, region=s3_server.region))
    options.update(extra)
    return make_site(tmp_path, s3_server, [disk], [SERVER], extra=options)


def upload_results(run, host=SERVER):
    """Results of the upload module (image_upload or cos_upload) of ``host``, read from the runner events: the job's
    result as the poll that saw the stage end collected it (job_progress ``result``)."""
    found = []
    for item in sorted(run.events, key=lambda event: event.get("counter", 0)):
        data = item.get("event_data", {})
        res = (data.get("res") or {}).get("result") or {}
        if item.get("event") == "runner_on_ok" and data.get("host") == host and "resumed_parts" in res and "uploaded_bytes" in res:
            found.append(res)
    return found


def parts_of(site, upload):
    client = site.s3.client()
    return client.list_parts(Bucket=site.bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", [])


def snapshot_time(key):
    """``images/web01/web01-20250101-120000.qcow2`` -> ``20250101-120000``."""
    match = re.search(r"-(\d{8}-\d{6})\.qcow2$", key)
    assert match, key
    return match.group(1)


def test_proxy_forwards_signed_requests_and_refuses_parts(s3_server, bucket, proxy):
    """The peer itself: SigV4 requests signed for the proxy's host verify upstream; parts after n are refused, not retried."""
    from ibm_botocore.exceptions import ClientError

    from ansible_collections.vmimage.replication.plugins.module_utils import _cos

    client = _cos.connect(s3_server.cos(endpoint=proxy.endpoint))
    client.put_object(Bucket=bucket, Key="plain", Body=b"x" * 1000)
    assert client.get_object(Bucket=bucket, Key="plain")["Body"].read() == b"x" * 1000
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    proxy.fail_parts_after(1)
    client.upload_part(Bucket=bucket, Key="parts", UploadId=upload_id, PartNumber=1, Body=io.BytesIO(os.urandom(PART_MB << 20)))
    with pytest.raises(ClientError) as refused:
        client.upload_part(Bucket=bucket, Key="parts", UploadId=upload_id, PartNumber=2, Body=io.BytesIO(os.urandom(PART_MB << 20)))
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert (proxy.forwarded_parts, proxy.refused_parts) == ([1], [2])  # one attempt: the SDK did not retry the 403
    direct = s3_server.client()
    assert [p["PartNumber"] for p in direct.list_parts(Bucket=bucket, Key="parts", UploadId=upload_id)["Parts"]] == [1]
    proxy.heal()
    client.upload_part(Bucket=bucket, Key="parts", UploadId=upload_id, PartNumber=2, Body=io.BytesIO(b"y" * 10))
    assert proxy.forwarded_parts == [1, 2]
    direct.abort_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload_id)
    # A wrong secret through the proxy still fails upstream's signature check: the proxy forges nothing.
    wrong = _cos.connect(s3_server.cos(endpoint=proxy.endpoint, secret_access_key="wrong" + s3_server.secret_access_key[5:]))
    with pytest.raises(ClientError):
        wrong.head_bucket(Bucket=bucket)


@pytest.mark.parametrize("s3_server, data_path", RESUME_CASES, indirect=["s3_server"])
def test_interrupted_upload_is_resumed_by_the_next_run(tmp_path, s3_server, proxy, resume_disk, data_path):
    site = through_proxy(tmp_path, s3_server, proxy, resume_disk, replication_keep_incomplete_uploads=True, replication_data_path=data_path)

    # First run: the S3 endpoint refuses every part after the first two.
    proxy.fail_parts_after(KEPT_PARTS)
    run = site.run()
    assert run.status == "failed", run.stdout
    failed = summary(run)[SERVER]
    assert failed["status"] == "failed", failed
    key = failed["key"]
    assert key and key.startswith("images/%s/" % SERVER), failed
    error = failed["error"]
    assert "AccessDenied" in error or "Access Denied" in error, error
    assert "Failed to upload s3://%s/%s" % (site.bucket, key) in error, error
    assert "also failed to clean up" not in error, error
    assert error.endswith("the upload, the snapshot and the run directory are kept: run again to resume it"), error
    assert failed["uploaded_bytes"] is None and failed["resumed_parts"] is None, failed
    assert proxy.forwarded_parts and len(proxy.forwarded_parts) == KEPT_PARTS, proxy.forwarded_parts
    assert proxy.refused_parts, "the run failed without sending a part the proxy refused"

    # Kept for the next run: the multipart upload with its parts, the snapshot and the run directory. Nothing imported.
    uploads = site.multipart_uploads()
    assert [u["Key"] for u in uploads] == [key], uploads
    kept_parts = parts_of(site, uploads[0])
    assert len(kept_parts) >= KEPT_PARTS, kept_parts
    left = site.leftovers()
    assert left.get("snapshots"), left
    assert left.get("work") == [os.path.basename(key)[: -len(".qcow2")]], left
    assert site.catalog(SERVER) is None
    assert key not in site.objects()
    assert all(snapshot_time(key) in name for name in left["snapshots"]), left  # the snapshot the key was named after

    # Second run, the endpoint healed: the same snapshot (same time, same key), the upload continued.
    proxy.heal()
    proxy.reset_counts()
    run = site.run()
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated", result
    assert result["key"] == key, (result["key"], key)
    assert snapshot_time(result["key"]) == snapshot_time(key)
    catalog = site.catalog(SERVER)
    assert isinstance(catalog, dict), catalog
    assert [image["key"] for image in catalog["images"]] == [key], catalog
    entry = catalog["images"][0]
    assert entry["name"] == result["image"] == "%s-%s" % (SERVER, snapshot_time(key)), catalog
    assert re.sub(r"\D", "", entry["snapshot_time"])[:14] == snapshot_time(key).replace("-", ""), catalog  # the first run's snapshot
    assert entry["sha256"] == result["sha256"], (entry, result)

    uploads_done = upload_results(run)
    assert len(uploads_done) == 1, uploads_done
    uploaded = uploads_done[0]
    assert ("read_bytes" in uploaded) == (data_path == "stream"), uploaded  # image_upload, or cos_upload after qemu_convert
    total_parts = uploaded["parts"]
    assert total_parts > len(kept_parts) + 1, uploaded  # the image is several parts, more than were kept
    assert uploaded["resumed_parts"] >= KEPT_PARTS, uploaded
    assert uploaded["uploaded_bytes"] < uploaded["size"], uploaded
    assert (result["resumed_parts"], result["uploaded_bytes"]) == (uploaded["resumed_parts"], uploaded["uploaded_bytes"]), result
    # What the endpoint was sent: the parts not kept, each once.
    assert len(proxy.forwarded_parts) == total_parts - uploaded["resumed_parts"], (proxy.forwarded_parts, uploaded)
    assert len(proxy.forwarded_parts) < total_parts
    assert not set(proxy.forwarded_parts) & {p["PartNumber"] for p in kept_parts}, (proxy.forwarded_parts, kept_parts)

    # Nothing is left: no upload, no snapshot, no run directory, no async job file, no orphan object.
    assert site.leftovers() == {}


@pytest.mark.parametrize("s3_server, data_path", CLEANUP_CASES, indirect=["s3_server"])
def test_interrupted_upload_is_cleaned_up_by_default(tmp_path, s3_server, proxy, resume_disk, data_path):
    site = through_proxy(tmp_path, s3_server, proxy, resume_disk, replication_data_path=data_path)

    proxy.fail_parts_after(KEPT_PARTS)
    run = site.run()
    assert run.status == "failed", run.stdout
    failed = summary(run)[SERVER]
    assert failed["status"] == "failed", failed
    assert "Failed to upload s3://%s/%s" % (site.bucket, failed["key"]) in failed["error"], failed["error"]
    assert "run again to resume" not in failed["error"], failed["error"]
    assert "AccessDenied" in failed["error"], failed["error"]
    assert "also failed to clean up" not in failed["error"], failed["error"]
    assert len(proxy.forwarded_parts) == KEPT_PARTS, proxy.forwarded_parts

    # replication_keep_incomplete_uploads is false: no multipart upload, snapshot, run directory or catalog stays.
    assert site.multipart_uploads() == []
    assert site.leftovers() == {}
    assert site.catalog(SERVER) is None
    assert site.objects() == {}
