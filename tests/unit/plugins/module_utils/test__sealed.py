# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Sealed credentials: AES-256-GCM round trip; a changed, cut or foreign blob fails clearly; the CLI; the filter."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vmimage.replication.plugins.filter.sealed import unseal as unseal_filter
from ansible_collections.vmimage.replication.plugins.module_utils import _sealed
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

COS = {"endpoint": "https://s3.us-south.example", "region": "us-south", "access_key_id": "AKIA0SEALTEST", "secret_access_key": "sealSecret/Zp4Lq8"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def test_round_trip_with_a_fresh_key_each_time():
    blob, key = _sealed.seal(COS)
    again, other_key = _sealed.seal(COS)
    assert blob.startswith("vmis1.") and key != other_key and blob != again
    assert COS["secret_access_key"] not in blob and _sealed.unseal(blob, key) == COS
    assert len(base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))) == 32


def _flip(blob, index):
    raw = bytearray(base64.urlsafe_b64decode(blob[6:] + "=" * (-len(blob[6:]) % 4)))
    raw[index] ^= 1
    return "vmis1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("how, expected", [
    ("ciphertext", "does not verify"), ("nonce", "does not verify"), ("tag", "does not verify"),
    ("cut", "does not verify"), ("truncated", "truncated"), ("other_key", "does not verify"),
    ("no_key", "VMIMAGE_SEAL_KEY"), ("short_key", "not 32"), ("not_sealed", "not a sealed blob"), ("garbage", "not base64url"),
])
def test_a_bad_blob_or_key_fails_clearly(how, expected):
    blob, key = _sealed.seal(COS)
    if how == "ciphertext":
        blob = _flip(blob, 20)
    elif how == "nonce":
        blob = _flip(blob, 0)
    elif how == "tag":
        blob = _flip(blob, -1)
    elif how == "cut":
        blob = blob[:-8]
    elif how == "truncated":
        blob = blob[:20]
    elif how == "other_key":
        key = _sealed.new_key()
    elif how == "no_key":
        key = ""
    elif how == "short_key":
        key = key[:20]
    elif how == "not_sealed":
        blob = json.dumps(COS)
    elif how == "garbage":
        blob = "vmis1.###"
    with pytest.raises(ReplicationError) as err:
        _sealed.unseal(blob, key)
    assert expected in err.value.msg and COS["secret_access_key"] not in err.value.msg
    with pytest.raises(AnsibleFilterError, match="unseal: Failed to unseal"):
        unseal_filter(blob, key)


def test_cli_seals_stdin_and_never_takes_secrets_in_argv(tmp_path):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "pytest-collections"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "extensions", "seal.py")], input=json.dumps(COS), capture_output=True, text=True,
                          env=env, check=True)
    answer = json.loads(done.stdout)
    assert _sealed.unseal(answer["sealed"], answer["key"]) == COS
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "extensions", "seal.py")], input="{not json", capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "stdin is not JSON" in bad.stderr


def test_scrub_removes_files_that_hold_the_key(tmp_path):
    blob, key = _sealed.seal(COS)
    (tmp_path / "artifacts" / "run1").mkdir(parents=True)
    (tmp_path / "artifacts" / "run1" / "command").write_text(json.dumps({"env": {"VMIMAGE_SEAL_KEY": key}}))
    (tmp_path / "artifacts" / "run1" / "stdout").write_text("nothing secret")
    assert _sealed.scrub(str(tmp_path), key) == [str(tmp_path / "artifacts" / "run1" / "command")]
    assert (tmp_path / "artifacts" / "run1" / "stdout").exists()


def test_open_cos_lets_the_sealed_values_win_and_keeps_plain_cos():
    blob, key = _sealed.seal({"cos": COS, "powervs": {"api_key": "x"}})
    opened = _sealed.open_cos({"endpoint": "https://plain.example", "sealed": blob, "seal_key": key, "validate_certs": False})
    assert opened == dict(COS, validate_certs=False)
    assert _sealed.open_cos({"endpoint": "https://e"}) == {"endpoint": "https://e"}
    with pytest.raises(ReplicationError, match="holds no cos dict"):
        _sealed.open_cos({"sealed": _sealed.seal(["a"], key)[0], "seal_key": key})


def _sealed_args(s3_rclone, bucket, src, key):
    blob, seal_key = _sealed.seal(s3_rclone.cos())
    return dict(cos={"endpoint": s3_rclone.cos()["endpoint"], "sealed": blob, "seal_key": key or seal_key},
                bucket=bucket, key="images/sealed/disk.ova", src=str(src)), blob, seal_key


def test_cos_upload_opens_the_sealed_blob_in_its_own_process(s3_rclone, module_runner, tmp_path):
    """Only the blob and its key reach the module; it uploads, and neither the secret nor the key is in its result."""
    bucket = s3_rclone.make_bucket("sealed-%s" % os.urandom(4).hex())
    src = tmp_path / "disk.ova"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    args, blob, seal_key = _sealed_args(s3_rclone, bucket, src, None)
    assert "secret_access_key" not in args["cos"] and "access_key_id" not in args["cos"]
    result = module_runner("cos_upload", args)
    assert result.get("changed") is True and not result.get("failed"), result
    assert s3_rclone.client().head_object(Bucket=bucket, Key=args["key"])["ContentLength"] == 3 * 1024 * 1024
    text = json.dumps(result)
    for secret in (s3_rclone.cos()["secret_access_key"], seal_key, blob):
        assert secret not in text

    args, blob, seal_key = _sealed_args(s3_rclone, bucket, src, _sealed.new_key())  # the key of another run
    failed = module_runner("cos_upload", args)
    assert failed.get("failed") and "does not verify" in failed["msg"], failed
    text = json.dumps(failed)
    for secret in (s3_rclone.cos()["secret_access_key"], seal_key, args["cos"]["seal_key"], blob):
        assert secret not in text
