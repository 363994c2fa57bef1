# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""image_verify against real S3 servers: the guest digest recomputed from the stored object; changed objects caught."""

from __future__ import annotations

import json
import struct
import uuid

from tests.conftest import SECRET_ACCESS_KEY
from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _qcow2
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


def test_import_verifies_and_records_the_digest(s3_server, bucket, module_runner, tmp_path, work_dir):  # noqa: F811
    when = "2025-01-01T12:00:00Z"
    key = _naming.object_key("images/", "web01", when, "qcow2")
    src = disk(tmp_path)
    upload_args = args(s3_server, bucket, key, src, work_dir)
    upload_args["metadata"]["snapshot-time"] = when
    uploaded = module_runner("image_upload", upload_args)
    assert not uploaded.get("failed"), uploaded
    importing = dict(cos=s3_server.cos(), bucket=bucket, server="web01", key=key)

    def corrupt(data):  # a byte of the first compressed cluster, just after the front
        data[_qcow2.Layout(64 * MIB, 65536).data_start + 10] ^= 0x01
    stored = s3_server.client().get_object(Bucket=bucket, Key=key)
    good_body, meta = stored["Body"].read(), stored["Metadata"]
    data = bytearray(good_body)
    corrupt(data)
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata=meta)
    refused = module_runner("image_import", importing)
    assert refused["failed"] and "s3://%s/%s" % (bucket, key) in refused["msg"], refused
    listed = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == [key], "nothing imported"
    unchecked = module_runner("image_import", dict(importing, verify_digest=False), check_mode=True)
    assert not unchecked.get("failed"), unchecked

    s3_server.client().put_object(Bucket=bucket, Key=key, Body=good_body, Metadata=meta)
    imported = module_runner("image_import", importing)
    assert not imported.get("failed") and imported["changed"], imported
    catalog = json.loads(s3_server.client().get_object(Bucket=bucket, Key="images/web01/catalog.json")["Body"].read())
    assert [e["guest_sha256"] for e in catalog["images"]] == [independent(src)], catalog
