"""image_upload against real S3 servers (rclone and SeaweedFS): one-pass convert + upload, idempotency, resume, failures."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess

import pytest
import requests

from tests.conftest import SECRET_ACCESS_KEY
from tests.harness import final_result, spawn_module
from tests.contract import assert_return_contract
from tests.unit.plugins.module_utils.test__qcow2 import noise, text, write_sparse
from tests.unit.plugins.modules.test_cos_upload import downloaded_sha256, pending, wait_for_parts
from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _image_upload, _progress, _qemu, _stream_upload

MIB = 1024 * 1024
RETURN_KEYS = {"bucket", "key", "endpoint", "format", "virtual_size", "size", "compression_ratio", "sha256", "etag", "metadata", "parts",
               "resumed_parts", "uploaded_bytes", "read_bytes", "seconds", "bytes_per_second", "verified", "compressor", "changed", "guest_sha256"}


def disk(tmp_path, name="src.img", noisy_mib=0, seed=b"s"):
    """A sparse raw disk: text that compresses, ``noisy_mib`` MiB that does not, and holes."""
    pieces = [(0, text(2 * MIB, seed)), (6 * MIB, noise(noisy_mib * MIB, seed))] if noisy_mib else [(0, text(2 * MIB, seed))]
    return write_sparse(tmp_path / name, 64 * MIB, pieces)


def args(server, bucket, key, src, work_dir, **extra):
    value = dict(cos=server.cos(), bucket=bucket, key=key, src=str(src), work_dir=str(work_dir), metadata={"source-server": "web01"})
    value.update(extra)
    return value


def downloaded_matches(server, bucket, key, src, tmp_path):
    path = str(tmp_path / "downloaded.qcow2")
    server.client().download_file(bucket, key, path)
    _qemu.run(["check", "-f", "qcow2", path], "check the download")
    _qemu.run(["compare", "-f", "raw", "-F", "qcow2", src, path], "compare the download")
    os.unlink(path)
    return True


@pytest.fixture
def work_dir(tmp_path):
    path = tmp_path / "work"
    path.mkdir()
    yield path
    assert os.listdir(path) == [], "the spool was left behind"


def test_one_part_round_trip_check_mode_and_idempotency(s3_server, bucket, module_runner, tmp_path, work_dir):
    src = disk(tmp_path)
    key = "images/web01/web01-20250101-120000.qcow2"
    check = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir), check_mode=True)
    assert check["changed"] is True and not check.get("failed"), check
    assert _cos.head(s3_server.client(), bucket, key) is None, "check mode uploaded"

    first = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir, progress_file=str(tmp_path / "p")))
    assert not first.get("failed"), first
    assert_return_contract("image_upload", first, expect=RETURN_KEYS | {"clusters", "part_size"})
    assert_return_contract("image_upload", check, expect=RETURN_KEYS)
    assert first["changed"] is True and first["parts"] == 1 and first["verified"] == "check"
    assert first["virtual_size"] == 64 * MIB and first["size"] < MIB and first["read_bytes"] < 4 * MIB
    assert downloaded_sha256(s3_server, bucket, key) == first["sha256"]
    meta = _cos.head(s3_server.client(), bucket, key)["metadata"]
    assert meta == first["metadata"]
    assert meta["sha256"] == first["sha256"] and meta["created-by"] == "vmimage.replication" and meta["source-server"] == "web01"
    assert meta["format"] == "qcow2" and meta["virtual-size"] == str(64 * MIB) and meta["conversion"].startswith("qcow2-v3")
    assert downloaded_matches(s3_server, bucket, key, src, tmp_path)
    assert _progress.read(str(tmp_path / "p"))["state"] == "finished"

    again = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir))
    assert again["changed"] is False and again["sha256"] == first["sha256"] and again["uploaded_bytes"] == 0, again
    assert module_runner("image_upload", args(s3_server, bucket, key, src, work_dir), check_mode=True)["changed"] is False
    forced = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir, force=True))
    assert forced["changed"] is True and forced["sha256"] == first["sha256"], "the same source gives the same bytes"

    with open(src, "r+b") as handle:  # the source changes: a new conversion
        handle.seek(MIB)
        handle.write(b"changed" * 1000)
    changed = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir))
    assert changed["changed"] is True and changed["sha256"] != first["sha256"]
    assert downloaded_matches(s3_server, bucket, key, src, tmp_path)


def test_multipart_stream_with_zstd(s3_server, bucket, module_runner, tmp_path, work_dir):
    src = disk(tmp_path, noisy_mib=14)
    key = "images/web02/web02.qcow2"
    done = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5, compression_type="zstd", verify="compare"))
    assert not done.get("failed"), done
    assert done["parts"] == -(-done["size"] // (5 * MIB)) >= 3 and done["part_size"] == 5 * MIB
    assert done["verified"] == "compare" and done["compressor"] == "zstandard"
    assert done["uploaded_bytes"] == done["size"] and done["clusters"]["uncompressed"] == 14 * 16
    assert downloaded_sha256(s3_server, bucket, key) == done["sha256"] == _cos.head(s3_server.client(), bucket, key)["metadata"]["sha256"]
    assert downloaded_matches(s3_server, bucket, key, src, tmp_path)
    assert pending(s3_server, bucket, key) == []


def test_block_device_source(s3_rclone, module_runner, tmp_path, work_dir, attach_loop):
    src = disk(tmp_path, noisy_mib=3)
    device = attach_loop(src)
    bucket, key = s3_rclone.make_bucket("image-upload-blockdev"), "images/blk/blk.qcow2"
    first = module_runner("image_upload", args(s3_rclone, bucket, key, device, work_dir, verify="compare"))
    assert not first.get("failed"), first.get("msg")
    assert first["virtual_size"] == 64 * MIB and first["read_bytes"] == 64 * MIB, "a block device is read whole"
    assert first["metadata"]["src-fingerprint"] == ""
    assert downloaded_matches(s3_rclone, bucket, key, src, tmp_path)
    again = module_runner("image_upload", args(s3_rclone, bucket, key, device, work_dir))
    assert again["changed"] is True and again["sha256"] == first["sha256"], "no fingerprint: converted again, to the same bytes"


def test_killed_stream_resumes_keeping_the_parts_sent(s3_server, bucket, module_runner, tmp_path, work_dir):
    src = disk(tmp_path, noisy_mib=30)
    key = "images/web03/web03.qcow2"
    module_args = args(s3_server, bucket, key, src, work_dir, part_size_mb=5, concurrency=1)
    process = spawn_module("image_upload", module_args, tmp_path, part_delay=0.5)
    try:
        assert wait_for_parts(s3_server, bucket, key, process, 2), process.communicate()
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert len(pending(s3_server, bucket, key)) == 1 and _cos.head(s3_server.client(), bucket, key) is None
    assert os.listdir(work_dir) == [], "nothing is spooled, even by a killed run"

    resumed = module_runner("image_upload", module_args)
    assert not resumed.get("failed"), resumed
    assert resumed["resumed_parts"] >= 2 and resumed["uploaded_bytes"] < resumed["size"], resumed
    assert resumed["uploaded_bytes"] == resumed["size"] - resumed["resumed_parts"] * 5 * MIB
    assert downloaded_sha256(s3_server, bucket, key) == resumed["sha256"]
    assert downloaded_matches(s3_server, bucket, key, src, tmp_path)
    assert pending(s3_server, bucket, key) == []


def test_an_unfinished_upload_of_other_bytes_is_replaced(s3_server, bucket, module_runner, tmp_path, work_dir):
    src = disk(tmp_path, noisy_mib=12)
    key = "images/web04/web04.qcow2"
    client = s3_server.client()
    stale = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=stale, PartNumber=2, Body=b"x" * (5 * MIB))
    done = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5))
    assert not done.get("failed"), done
    assert done["resumed_parts"] == 0 and done["uploaded_bytes"] == done["size"]
    assert downloaded_matches(s3_server, bucket, key, src, tmp_path)
    assert pending(s3_server, bucket, key) == []


@pytest.mark.parametrize("keep", [False, True])
def test_a_failure_after_parts_were_sent_aborts_unless_kept(s3_server, bucket, module_runner, tmp_path, work_dir, monkeypatch, keep):
    src = disk(tmp_path, noisy_mib=14)
    key = "images/web05/web05-%s.qcow2" % keep

    def broken_listing(*_args):
        raise _image_upload.ReplicationError("Failed to list the parts: injected failure")
    monkeypatch.setattr(_stream_upload.StreamedUpload, "_check_listed", broken_listing)
    failed = module_runner("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5, keep_incomplete=keep,
                                                progress_file=str(tmp_path / "p")))
    assert failed.get("failed") and "injected failure" in failed["msg"], failed
    assert failed["bucket"] == bucket and failed["key"] == key
    assert _cos.head(s3_server.client(), bucket, key) is None
    assert len(pending(s3_server, bucket, key)) == (1 if keep else 0)
    assert _progress.read(str(tmp_path / "p"))["state"] == "failed"


def test_a_stored_object_that_fails_qemu_img_check_is_deleted(s3_server, bucket, module_runner, tmp_path, work_dir, monkeypatch):
    key = "images/web05/web05-check.qcow2"
    seen = []
    real_verify = _qemu.verify_output

    def spy(name, *rest):
        seen.append(name)
        return real_verify(name, *rest)
    monkeypatch.setattr(_qemu, "verify_output", spy)
    # The store damages the object after it was completed (a broken L1 pointer), before qemu-img reads it.
    monkeypatch.setattr(_image_upload, "read_back", lambda client, b, k, ranges, md5s: _break_header(client, b, k))
    failed = module_runner("image_upload", args(s3_server, bucket, key, disk(tmp_path, noisy_mib=6), work_dir, part_size_mb=5))
    assert failed.get("failed") and "Failed to verify the stored object s3://%s/%s" % (bucket, key) in failed["msg"], failed
    assert seen and seen[0].startswith("json:") and "127.0.0.1" in seen[0], "qemu-img read the object over the loopback relay"
    argv = seen[0]  # what qemu-img gets on its command line (visible in ps): no key, no signature, not even the endpoint
    assert s3_server.access_key_id not in argv and SECRET_ACCESS_KEY not in argv and "Signature" not in argv and s3_server.endpoint not in argv
    assert "127.0.0.1" not in failed["msg"] and SECRET_ACCESS_KEY not in json.dumps(failed)
    assert _cos.head(s3_server.client(), bucket, key) is None and pending(s3_server, bucket, key) == []


def test_the_relay_serves_only_qemu_img_whose_password_is_in_a_private_file(s3_server, bucket, module_runner, tmp_path, work_dir, monkeypatch):
    """Another local user can read qemu-img's argv and reach loopback: the relay still refuses them (no password in argv)."""
    key = "images/web05/web05-relay.qcow2"
    seen = {}
    real_verify = _qemu.verify_output

    def spy(name, fmt, src, src_format, mode, objects=()):
        url = json.loads(name[len("json:"):])["file"]["url"]
        secret_file = objects[1].split("file=", 1)[1]
        with open(secret_file, encoding="ascii") as handle:
            password = handle.read()
        seen.update(secret_file=secret_file, mode=stat.S_IMODE(os.stat(secret_file).st_mode), password_in_argv=password in name + " ".join(objects),
                    anonymous=requests.get(url, timeout=10).status_code,
                    wrong=requests.get(url, auth=(_qemu.RELAY_USER, password + "x"), timeout=10).status_code,
                    right=requests.head(url, auth=(_qemu.RELAY_USER, password), timeout=10).status_code)
        return real_verify(name, fmt, src, src_format, mode, objects)
    monkeypatch.setattr(_qemu, "verify_output", spy)
    done = module_runner("image_upload", args(s3_server, bucket, key, disk(tmp_path, noisy_mib=6), work_dir, part_size_mb=5))
    assert not done.get("failed") and done["verified"] == "check", done
    assert seen["anonymous"] == 401 and seen["wrong"] == 401 and seen["right"] == 200, seen
    assert seen["mode"] == 0o600 and not seen["password_in_argv"]
    assert not os.path.exists(seen["secret_file"]) and not os.path.exists(os.path.dirname(seen["secret_file"]))


def _break_header(client, bucket, key):
    """Rewrite the object with a broken L1 table pointer, as a damaged store would serve it; the sha256 of what is stored."""
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[40:48] = (len(data) * 4).to_bytes(8, "big")  # l1_table_offset far past the end
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    return hashlib.sha256(data).hexdigest()


def test_terminated_run_cleans_up(s3_server, bucket, tmp_path, work_dir):
    src = disk(tmp_path, noisy_mib=30)
    key = "images/web06/web06.qcow2"
    process = spawn_module("image_upload", args(s3_server, bucket, key, src, work_dir, part_size_mb=5, concurrency=1), tmp_path, part_delay=0.5)
    assert wait_for_parts(s3_server, bucket, key, process, 1), process.communicate()
    process.send_signal(signal.SIGTERM)
    result = final_result(process)
    assert result["failed"] and "interrupted by SIGTERM" in result["msg"], result
    assert pending(s3_server, bucket, key) == [] and _cos.head(s3_server.client(), bucket, key) is None


def test_non_raw_sources_and_bad_options_fail_clearly(s3_rclone, module_runner, tmp_path, work_dir):
    server, bucket = s3_rclone, s3_rclone.make_bucket("image-upload-errors")
    raw = disk(tmp_path)
    image = str(tmp_path / "src.qcow2")
    _qemu.run(["convert", "-O", "qcow2", raw, image], "make a qcow2 source")
    cases = [
        (dict(src=image), "it is a qcow2 image, and image_upload reads raw volumes"),
        (dict(src=str(tmp_path / "missing.img")), "does not exist; check src"),
        (dict(cluster_size=1000), "cluster_size must be a power of two"),
        (dict(work_dir=str(tmp_path / "nowhere")), "work_dir %s is not a directory" % (tmp_path / "nowhere")),
        (dict(part_size_mb=4), "part_size_mb must be at least 5"),
        (dict(metadata={"Bad Key": "x"}), "keys must be lower-case letters"),
        (dict(bucket="no-such-bucket"), "no-such-bucket"),
        (dict(cos=server.cos(secret_access_key="wrong-" + SECRET_ACCESS_KEY)), "check cos.secret_access_key"),
    ]
    for extra, message in cases:
        module_args = args(server, bucket, "images/x/x.qcow2", raw, work_dir)
        module_args.update(extra)
        result = module_runner("image_upload", module_args)
        assert result.get("failed") and message in result["msg"], (extra, result)
        if "cos" in extra or "bucket" in extra:
            assert server.endpoint in result["msg"] and result["bucket"] == module_args["bucket"], result
        assert SECRET_ACCESS_KEY not in json.dumps(result)
    assert _cos.list_uploads(server.client(), bucket) == []


def test_part_one_holds_the_whole_front_with_large_clusters(s3_rclone, module_runner, tmp_path, work_dir):
    # 2 MiB clusters: header, L1 and refcount table take 6 MiB, more than a 5 MiB part. Part 1 is the front
    # (held in memory until the end), the other parts keep their size.
    src = disk(tmp_path, noisy_mib=14)
    bucket, key = s3_rclone.make_bucket("image-upload-front"), "images/big/big.qcow2"
    done = module_runner("image_upload", args(s3_rclone, bucket, key, src, work_dir, cluster_size=2 * MIB, part_size_mb=5))
    assert not done.get("failed"), done
    assert done["part_size"] == 5 * MIB and done["parts"] == 1 + -(-(done["size"] - 6 * MIB) // (5 * MIB)), done
    assert downloaded_matches(s3_rclone, bucket, key, src, tmp_path)


def test_a_smaller_image_replaces_an_unfinished_larger_upload(s3_server, bucket, module_runner, tmp_path, work_dir):
    key = "images/web07/web07.qcow2"
    client = s3_server.client()
    stale = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=stale, PartNumber=2, Body=b"x" * (5 * MIB))
    done = module_runner("image_upload", args(s3_server, bucket, key, disk(tmp_path), work_dir))
    assert not done.get("failed") and done["parts"] == 1, done
    assert pending(s3_server, bucket, key) == [], "the unfinished upload was left behind"


def test_an_object_whose_metadata_cannot_be_set_is_not_left(s3_server, bucket, module_runner, tmp_path, work_dir, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise _cos.ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "CopyObject")
    monkeypatch.setattr(_cos, "replace_metadata", refuse)
    key = "images/web08/web08.qcow2"
    failed = module_runner("image_upload", args(s3_server, bucket, key, disk(tmp_path, noisy_mib=12), work_dir, part_size_mb=5))
    assert failed.get("failed") and "Failed to set the metadata (sha256...) of s3://%s/%s" % (bucket, key) in failed["msg"], failed
    assert "SlowDown" in failed["msg"] and "it was deleted" in failed["msg"]
    assert _cos.head(s3_server.client(), bucket, key) is None and pending(s3_server, bucket, key) == []


def test_a_work_dir_smaller_than_the_image_is_enough(s3_rclone, module_runner, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: %s" % mounted.stderr.strip())
    try:
        bucket = s3_rclone.make_bucket("image-upload-small-work-dir")
        src = disk(tmp_path, noisy_mib=8)
        done = module_runner("image_upload", args(s3_rclone, bucket, "k/big.qcow2", src, small, part_size_mb=5))
        assert not done.get("failed") and done["size"] > 8 * MIB and done["parts"] >= 2, done
        assert os.listdir(small) == [] and _cos.list_uploads(s3_rclone.client(), bucket) == []
        assert downloaded_matches(s3_rclone, bucket, "k/big.qcow2", src, tmp_path)
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.parametrize("kind", ["fifo", "character device"])
def test_sources_that_are_not_volumes_are_refused(s3_rclone, module_runner, tmp_path, work_dir, kind):
    src = str(tmp_path / "pipe")
    if kind == "fifo":
        os.mkfifo(src)  # opening it would wait for a writer for ever
    else:
        src = "/dev/zero"
    failed = module_runner("image_upload", args(s3_rclone, "no-bucket-needed", "k/k.qcow2", src, work_dir))
    assert failed.get("failed") and "neither a file nor a block device" in failed["msg"], failed
