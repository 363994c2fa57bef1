"""The stream path without a local spool, against both S3 servers (issue 11).

- A disk whose compressed image is larger than the free space of ``work_dir`` (a 64 MiB tmpfs mounted here)
  replicates; a ``kill -9`` mid-upload leaves nothing there and the next run resumes, keeping the stored parts.
- The object is what the source holds: qemu-img check and compare of a download are clean, and the target's
  verification (image_verify) recomputes the guest digest recorded on it.
- An object changed after its upload (one byte; one part replaced by other bytes of the same size) is caught
  by the target's verification, with an error naming the object.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import SECRET_ACCESS_KEY
from tests.harness import spawn_module
from tests.unit.plugins.module_utils.test__qcow2 import noise, text, write_sparse
from tests.unit.plugins.modules.test_cos_upload import pending, wait_for_parts
from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _qemu

MIB = 1024 * 1024
WORK_DIR_MIB = 64


@pytest.fixture
def small_work_dir(tmp_path):
    """A 64 MiB tmpfs as work_dir, unmounted after the test."""
    path = tmp_path / "work"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % WORK_DIR_MIB, "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % mounted.stderr.strip())
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def used_bytes(path):
    stats = os.statvfs(path)
    return (stats.f_blocks - stats.f_bfree) * stats.f_frsize


def free_bytes(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def module_args(server, bucket, key, src, work_dir, **extra):
    value = dict(cos=server.cos(), bucket=bucket, key=key, src=str(src), work_dir=str(work_dir), metadata={"source-server": "web01"})
    value.update(extra)
    return value


def download_is_clean(server, bucket, key, src, tmp_path):
    """qemu-img check and compare (against the source) of the stored object, downloaded outside work_dir."""
    path = str(tmp_path / "downloaded.qcow2")
    server.client().download_file(bucket, key, path)
    try:
        _qemu.run(["check", "-f", "qcow2", path], "check the download")
        _qemu.run(["compare", "-f", "raw", "-F", "qcow2", str(src), path], "compare the download")
    finally:
        os.unlink(path)
    return True


def test_a_disk_larger_than_work_dir_replicates_and_resumes_after_a_kill(s3_server, bucket, small_work_dir, tmp_path, module_runner):
    # 1 GiB of guest, 96 MiB of it incompressible: the image alone is larger than all of work_dir.
    src = write_sparse(tmp_path / "src.img", 1024 * MIB, [(0, text(4 * MIB)), (64 * MIB, noise(96 * MIB, b"big")),
                                                          (900 * MIB, text(2 * MIB, b"end"))])
    key = "images/web01/web01-20260101-000000.qcow2"
    arguments = module_args(s3_server, bucket, key, src, small_work_dir, part_size_mb=8, concurrency=2)
    process = spawn_module("image_upload", arguments, tmp_path, part_delay=0.3)
    try:
        assert wait_for_parts(s3_server, bucket, key, process, 3), process.communicate()
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert len(pending(s3_server, bucket, key)) == 1 and _cos.head(s3_server.client(), bucket, key) is None
    assert os.listdir(small_work_dir) == [] and used_bytes(small_work_dir) == 0, "a killed run left something in work_dir"

    done = module_runner("image_upload", arguments)
    assert not done.get("failed"), done.get("msg")
    assert done["size"] > WORK_DIR_MIB * MIB >= free_bytes(small_work_dir), "the image is larger than work_dir could hold"
    assert done["resumed_parts"] >= 3 and done["uploaded_bytes"] <= done["size"] - 3 * 8 * MIB, done
    assert done["verified"] == "check" and done["metadata"]["sha256"] == done["sha256"]
    assert os.listdir(small_work_dir) == [] and used_bytes(small_work_dir) == 0
    assert pending(s3_server, bucket, key) == []
    dumped = json.dumps(done)
    assert SECRET_ACCESS_KEY not in dumped and "127.0.0.1:" not in dumped.replace(s3_server.endpoint, ""), "a secret or relay URL leaked"
    assert download_is_clean(s3_server, bucket, key, src, tmp_path)

    verified = module_runner("image_verify", dict(cos=s3_server.cos(), bucket=bucket, key=key))
    assert not verified.get("failed"), verified.get("msg")
    assert verified["guest_sha256"] == done["guest_sha256"]


def _replace_object(client, bucket, key, data, metadata, part_size=None):
    """Store ``data`` under ``key`` with ``metadata``, in one PUT or as parts of ``part_size``."""
    if part_size is None:
        client.put_object(Bucket=bucket, Key=key, Body=data, Metadata=metadata)
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(data), part_size), 1):
        answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data[offset:offset + part_size])
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})


@pytest.mark.parametrize("change", ["one byte", "one part replaced"])
def test_an_object_changed_after_upload_is_caught_at_the_target(s3_server, bucket, tmp_path, module_runner, change):
    src = write_sparse(tmp_path / "src.img", 256 * MIB, [(0, text(6 * MIB)), (32 * MIB, noise(20 * MIB, b"mid"))])
    key = "images/web02/web02-%s.qcow2" % change.replace(" ", "-")
    done = module_runner("image_upload", module_args(s3_server, bucket, key, src, tmp_path, part_size_mb=5))
    assert not done.get("failed") and done["parts"] >= 4, done.get("msg")
    client = s3_server.client()
    stored = _cos.head(client, bucket, key)
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    if change == "one byte":
        data[len(data) // 2] ^= 0x01  # inside the incompressible clusters
        _replace_object(client, bucket, key, bytes(data), stored["metadata"])
    else:
        part = 5 * MIB
        data[2 * part:3 * part] = noise(part, b"other")  # part 3 holds other bytes of the same length
        _replace_object(client, bucket, key, bytes(data), stored["metadata"], part_size=part)
    assert _cos.head(client, bucket, key)["metadata"]["guest-sha256"] == done["guest_sha256"], "the record was kept, only the bytes changed"

    failed = module_runner("image_verify", dict(cos=s3_server.cos(), bucket=bucket, key=key))
    assert failed.get("failed") and "s3://%s/%s" % (bucket, key) in failed["msg"], failed
    assert SECRET_ACCESS_KEY not in json.dumps(failed)
