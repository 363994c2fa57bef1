# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""image_verify against real S3 servers: the guest digest recomputed from the stored object; changed objects caught."""

from __future__ import annotations

import json
import struct
import uuid

from tests.conftest import SECRET_ACCESS_KEY
from tests.contract import assert_return_contract
from tests.unit.plugins.module_utils.test__digest import independent
from tests.unit.plugins.modules.test_image_upload import args, disk, work_dir  # noqa: F401  pylint: disable=unused-import

MIB = 1024 * 1024
KEY = "images/web01/web01-20250101-120000.qcow2"


def verify(server, bucket, runner, **extra):
    return runner("image_verify", dict(cos=server.cos(), bucket=bucket, key=KEY, **extra))


def replace_object(server, bucket, change):
    client = server.client()
    stored = client.get_object(Bucket=bucket, Key=KEY)
    data = bytearray(stored["Body"].read())
    change(data)
    client.put_object(Bucket=bucket, Key=KEY, Body=bytes(data), Metadata=stored["Metadata"])


def test_stored_digest_verifies_and_changes_are_caught(s3_server, bucket, module_runner, tmp_path, work_dir):  # noqa: F811
    src = disk(tmp_path, noisy_mib=12)
    uploaded = module_runner("image_upload", args(s3_server, bucket, KEY, src, work_dir, part_size_mb=5))
    assert not uploaded.get("failed") and uploaded["parts"] > 2, uploaded
    assert uploaded["metadata"]["guest-sha256"] == independent(src), "the stream's digest is the guest's"

    good = verify(s3_server, bucket, module_runner)
    assert not good.get("failed") and good["guest_sha256"] == independent(src) == good["recorded"], good
    assert_return_contract("image_verify", good, expect={"bucket", "key", "guest_sha256", "recorded", "size", "virtual_size", "seconds",
                                                         "changed"})
    assert verify(s3_server, bucket, module_runner, guest_sha256=good["guest_sha256"].upper()).get("failed") is None

    wrong = verify(s3_server, bucket, module_runner, guest_sha256="0" * 64)
    assert wrong["failed"] and "s3://%s/%s" % (bucket, KEY) in wrong["msg"] and "given" in wrong["msg"], wrong

    def one_byte(data):  # a byte inside the text that compresses: the first stored clusters after the front
        data[len(data) // 3] ^= 0x01
    replace_object(s3_server, bucket, one_byte)
    changed = verify(s3_server, bucket, module_runner)
    assert changed["failed"] and "Failed to verify s3://%s/%s" % (bucket, KEY) in changed["msg"], changed
    assert SECRET_ACCESS_KEY not in json.dumps(changed)

    def one_part(data):  # the second 5 MiB part replaced by other bytes of the same length
        data[5 * MIB:10 * MIB] = bytes(range(256)) * (5 * MIB // 256)
    replace_object(s3_server, bucket, one_part)
    replaced = verify(s3_server, bucket, module_runner)
    assert replaced["failed"] and "s3://%s/%s" % (bucket, KEY) in replaced["msg"] and "upload it again" in replaced["msg"], replaced


def test_missing_object_or_record_fails_clearly(s3_rclone, module_runner):
    bucket = s3_rclone.make_bucket("t-verify-%s" % uuid.uuid4().hex[:12])
    missing = verify(s3_rclone, bucket, module_runner)
    assert missing["failed"] and "s3://%s/%s: there is no such object" % (bucket, KEY) in missing["msg"], missing
    s3_rclone.client().put_object(Bucket=bucket, Key=KEY, Body=struct.pack(">4sIQIIQII", b"QFI\xfb", 3, 0, 0, 16, MIB, 0, 0) + bytes(200))
    unrecorded = verify(s3_rclone, bucket, module_runner)
    assert unrecorded["failed"] and "records no guest-sha256" in unrecorded["msg"], unrecorded
    garbage = verify(s3_rclone, bucket, module_runner, guest_sha256="0" * 64)
    assert garbage["failed"] and "not a QCOW2 image that reads back whole" in garbage["msg"], garbage
