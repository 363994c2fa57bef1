"""image_export: real Glance (RegionTwo) -> a real S3 server (rclone) -> the IBM VPC emulator's image library.

Glance's stored file is damaged on disk for the hash check, and an image records a wrong guest digest for the digest check.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _digest
from tests.emulators import vpc_control
from tests.harness import run_module
from tests.integration.test_openstack_glance import glance, library, openstack_cloud  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.xdist_group("openstack")  # one worker starts the peer once (--dist loadgroup)
VPC_KEY = "exportVpcKey-Q8mW2nZr5TxL4Jk7Pd3"
SERVER = "app01"


def _glance_image(library, seed, **properties):
    body = library.qcow2(seed)
    path = library.tmp / ("%s.qcow2" % seed)
    guest = _digest.digest_qcow2(_digest.file_reader(str(path)))
    made = library.glance.image.create_image(name="%s-latest" % SERVER, filename=str(path), disk_format="qcow2", container_format="bare",
                                             vmimage_snapshot_time="2026-05-01T08:00:00Z", **properties)
    library.glance.image.wait_for_status(made, "active", interval=0.2, wait=60)
    return library.glance.image.get_image(made.id), body, guest


def _export_args(library, **extra):
    return dict({"cos": library.s3.cos(), "bucket": library.bucket, "server": SERVER, "part_size": 5 * 1024 * 1024,
                 "openstack": {"cloud": "peer", "region_name": "RegionTwo"}}, **extra)


def _glance_file(library, image_id):
    return os.path.join(library.cloud.root, "glance-RegionTwo", "images", image_id)


def test_export_a_glance_image_and_import_it_into_ibm_vpc(library, tmp_path):
    image, body, guest = _glance_image(library, "export-one")
    args = _export_args(library)
    planned = run_module("image_export", args, check_mode=True)
    assert planned["changed"] is True and planned["key"] == "images/app01/app01-20260501-080000.qcow2", planned
    assert library.s3.client().list_objects_v2(Bucket=library.bucket).get("Contents", []) == []
    done = run_module("image_export", args)
    assert done["changed"] is True and done["sha256"] == hashlib.sha256(body).hexdigest() and done["guest_sha256"] == guest, done
    assert done["image"]["id"] == image.id and done["image"]["os_hash_value"] == hashlib.sha512(body).hexdigest()
    head = library.s3.client().head_object(Bucket=library.bucket, Key=done["key"])
    meta = {k.lower(): v for k, v in head["Metadata"].items()}  # rclone answers them capitalized
    assert meta["source-image"] == image.id and meta["guest-sha256"] == guest and meta["sha256"] == done["sha256"]
    assert head["ContentLength"] == len(body)
    assert library.s3.client().get_object(Bucket=library.bucket, Key=done["key"])["Body"].read() == body
    again = run_module("image_export", args)
    assert again["changed"] is False and again["sha256"] == done["sha256"]
    assert library.cloud.password not in repr(done) + repr(again)

    (tmp_path / "vpc").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VPC_EMULATOR_S3_ACCESS_KEY", library.s3.access_key_id)
        env.setenv("VPC_EMULATOR_S3_SECRET_KEY", library.s3.secret_access_key)
        vpc = vpc_control.start(VPC_KEY, data_dir=str(tmp_path / "vpc"), delay=0.05, s3_endpoint=library.s3.endpoint)
    try:
        vpc_options = {"api_key": VPC_KEY, "region": "eu-de", "endpoint": vpc.service_url("eu-de"), "iam_url": vpc.iam_url, "wait_sleep": 0.1,
                       "operating_system": "debian-12-amd64", "cos_region": library.s3.region, "max_retries": 2, "retry_interval": 0.05}
        imported = run_module("image_import", {"target": "ibm_vpc", "cos": library.s3.cos(), "bucket": library.bucket, "server": SERVER,
                                               "key": done["key"], "ibm_vpc": vpc_options})
    finally:
        vpc.stop()
    assert not imported.get("failed"), imported
    assert imported["latest"]["name"] == "app01-20260501-080000" and imported["image"]["sha256"] == done["sha256"]
    assert imported["image"]["guest_sha256"] == guest  # the importer recomputed it from the object and found it equal


def test_a_damaged_glance_image_or_a_wrong_digest_leaves_no_object(library):
    image, body, _guest = _glance_image(library, "export-two")
    path = _glance_file(library, image.id)
    with open(path, "r+b") as handle:  # Glance now serves bytes that are not the ones it hashed
        handle.seek(len(body) - 4096)
        handle.write(b"\xff" * 16)
    damaged = run_module("image_export", _export_args(library))
    assert damaged["failed"] and "Glance records %d bytes with sha512" % len(body) in damaged["msg"], damaged
    assert "the object was deleted" in damaged["msg"]
    client = library.s3.client()
    assert client.list_objects_v2(Bucket=library.bucket).get("Contents", []) == []
    assert not client.list_multipart_uploads(Bucket=library.bucket).get("Uploads")
    library.glance.image.delete_image(image)

    image, body, guest = _glance_image(library, "export-three", vmimage_guest_sha256="0" * 64)
    wrong = run_module("image_export", _export_args(library))
    assert wrong["failed"] and "guest content digest is %s, but the image records %s" % (guest, "0" * 64) in wrong["msg"], wrong
    assert client.list_objects_v2(Bucket=library.bucket).get("Contents", []) == []

    missing = run_module("image_export", _export_args(library, image="no-such-image"))
    assert missing["failed"] and missing["msg"].startswith("Failed to export image no-such-image: no image of that name or id"), missing
