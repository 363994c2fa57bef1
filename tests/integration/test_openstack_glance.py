"""Target openstack against real Keystone + Glance (tests/peers/openstack.py), images streamed from a real S3 server (rclone).

RegionTwo's Glance takes the images; RegionOne's accepts only raw disks, so a refused format is Glance's own answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _openstack
from tests.harness import run_module
from tests.peers.openstack import session_peer

pytestmark = pytest.mark.xdist_group("openstack")  # one worker starts the peer once (--dist loadgroup)

SERVER = "app01"
T1, T2, T3 = "2026-04-01T10:00:00Z", "2026-04-02T10:00:00Z", "2026-04-03T10:00:00Z"


@pytest.fixture(scope="session")
def openstack_cloud(request, tmp_path_factory):
    return session_peer(request, tmp_path_factory)


@pytest.fixture
def glance(openstack_cloud):
    """RegionTwo's Glance, emptied before and after the test."""
    conn = openstack_cloud.connect("RegionTwo")

    def empty():
        for image in list(conn.image.images()):
            conn.image.delete_image(image, ignore_missing=True)
    empty()
    yield conn
    empty()
    conn.close()


@pytest.fixture
def library(s3_rclone, openstack_cloud, glance, monkeypatch, tmp_path):
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", openstack_cloud.clouds_yaml)
    return Library(s3_rclone, openstack_cloud, glance, tmp_path)


class Library:
    """A bucket with image objects as cos_upload leaves them, and the module arguments that import them into RegionTwo."""

    def __init__(self, s3, cloud, glance, tmp_path):
        self.s3, self.cloud, self.glance, self.tmp = s3, cloud, glance, tmp_path
        self.bucket = s3.make_bucket("os-%s" % uuid.uuid4().hex[:12])

    def qcow2(self, seed):
        """A real qcow2 with some data in it (different per seed)."""
        raw, out = self.tmp / ("%s.raw" % seed), self.tmp / ("%s.qcow2" % seed)
        with open(raw, "wb") as handle:
            handle.truncate(16 * 1024 * 1024)
            handle.seek(1024 * 1024)
            handle.write(hashlib.sha512(seed.encode()).digest() * 2048)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
        return out.read_bytes()

    def upload(self, snapshot_time, body, sha256=None):
        key = _naming.object_key("images/", SERVER, snapshot_time, "qcow2")
        meta = {"created-by": _naming.CREATED_BY, "sha256": sha256 or hashlib.sha256(body).hexdigest(), "format": "qcow2",
                "snapshot-time": snapshot_time, "source-server": SERVER}
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=meta)
        return key

    def args(self, **extra):
        base = {"target": "openstack", "cos": self.s3.cos(), "bucket": self.bucket, "server": SERVER,
                "openstack": {"cloud": "peer", "region_name": "RegionTwo", "timeout": 120}}
        openstack = extra.pop("openstack", {})
        base["openstack"].update(openstack)
        base.update(extra)
        return base

    def names(self):
        return sorted(i.name for i in self.glance.image.images())


def test_import_rotates_keeps_and_prunes_in_real_glance(library):
    bodies = [library.qcow2(s) for s in ("one", "two", "three")]
    key1 = library.upload(T1, bodies[0])
    props = {"os_distro": "ubuntu", "os_type": "linux", "hw_disk_bus": "virtio", "vmimage_server": "spoofed"}
    args = library.args(key=key1, keep_last=2, openstack={"min_disk": 1, "min_ram": 512, "properties": props})

    preview = run_module("image_import", args, check_mode=True)
    assert preview["changed"] is True and preview["image"]["name"] == "app01-20260401-100000" and library.names() == []

    first = run_module("image_import", args)
    assert not first.get("failed"), first
    assert first["changed"] is True and first["latest"]["name"] == "app01-20260401-100000" and library.names() == ["app01-latest"]
    made = library.glance.image.get_image(first["image"]["id"])
    extra = library.glance.image.get("/images/%s" % made.id).json()  # every property as Glance answers it
    assert (made.disk_format, made.container_format, made.min_disk, made.min_ram, made.status) == ("qcow2", "bare", 1, 512, "active")
    assert extra.get("os_distro") == "ubuntu" and extra.get("hw_disk_bus") == "virtio"
    assert extra.get("vmimage_server") == SERVER and extra.get("vmimage_created_by") == _naming.CREATED_BY
    assert extra.get("vmimage_sha256") == hashlib.sha256(bodies[0]).hexdigest()
    assert (made.hash_algo, made.hash_value) == ("sha512", hashlib.sha512(bodies[0]).hexdigest())
    assert b"".join(library.glance.image.download_image(made, stream=True).iter_content(1 << 20)) == bodies[0]

    again = run_module("image_import", args)
    assert again["changed"] is False and library.names() == ["app01-latest"]

    library.glance.image.create_image(name="app01-20200101-000000", disk_format="raw", container_format="bare", data=b"x" * 512,
                                      allow_duplicates=True)  # not the collection's: never renamed nor pruned
    second = run_module("image_import", library.args(key=library.upload(T2, bodies[1]), keep_last=2))
    assert second["previous_latest"]["name"] == "app01-20260401-100000" and second["latest"]["name"] == "app01-20260402-100000"
    assert library.names() == ["app01-20200101-000000", "app01-20260401-100000", "app01-latest"]

    third = run_module("image_import", library.args(key=library.upload(T3, bodies[2]), keep_last=2))
    assert third["pruned"] == ["app01-20260401-100000"] and third["orphaned"] == []
    assert library.names() == ["app01-20200101-000000", "app01-20260402-100000", "app01-latest"]

    info = run_module("image_info", library.args())
    assert [i["name"] for i in info["images"]] == ["app01-20260402-100000", "app01-20260403-100000"]
    assert info["latest"]["glance_name"] == "app01-latest" and info["latest"]["sha256"] == hashlib.sha256(bodies[2]).hexdigest()

    with_force = library.args(state="absent", name="app01-latest")
    refused = run_module("image_import", with_force)
    assert refused["failed"] and "force" in refused["msg"]
    gone = run_module("image_import", library.args(state="absent", name="app01-20260402-100000"))
    assert gone["changed"] is True and library.names() == ["app01-20200101-000000", "app01-latest"]
    missing = run_module("image_import", library.args(state="absent", name="app01-20260402-100000"))
    assert missing["changed"] is False and not missing.get("failed")


def test_bytes_that_differ_from_the_record_delete_the_new_image(library):
    good = library.qcow2("good")
    run_module("image_import", library.args(key=library.upload(T1, good)))
    other = library.qcow2("other")
    key = library.upload(T2, other, sha256=hashlib.sha256(b"what cos_upload had read").hexdigest())  # the object changed after its upload
    failed = run_module("image_import", library.args(key=key))
    assert failed["failed"] and "sha256" in failed["msg"] and "the image was deleted" in failed["msg"] and key in failed["msg"]
    assert library.names() == ["app01-latest"]  # the previous latest untouched, no half image left


def test_glance_hash_that_differs_from_what_was_sent_fails_and_deletes(library, monkeypatch):
    """Glance's os_hash_value is compared with the sha512 computed while streaming; skew ours to see the comparison bite."""
    real = _openstack.HashingReader.hexdigest
    monkeypatch.setattr(_openstack.HashingReader, "hexdigest", lambda self, name: ("0" * 128) if name == "sha512" else real(self, name))
    failed = run_module("image_import", library.args(key=library.upload(T1, library.qcow2("h"))))
    assert failed["failed"] and "Glance stored" in failed["msg"] and "sha512" in failed["msg"] and "the image was deleted" in failed["msg"]
    assert library.names() == []


def test_region_that_refuses_qcow2_gives_glance_answer_and_leaves_nothing(library, openstack_cloud):
    one = openstack_cloud.connect("RegionOne")
    before = sorted(i.id for i in one.image.images())  # other tests of the session keep snapshot images in RegionOne
    failed = run_module("image_import", library.args(key=library.upload(T1, library.qcow2("r")), openstack={"region_name": "RegionOne"}))
    assert failed["failed"] and "HTTP 400" in failed["msg"] and "disk_formats" in failed["msg"] and "RegionOne" in failed["msg"]
    assert sorted(i.id for i in one.image.images()) == before
    one.close()


def test_unknown_cloud_and_wrong_credentials_name_the_fix_and_leak_nothing(library, openstack_cloud):
    unknown = run_module("image_info", library.args(openstack={"cloud": "nosuchcloud"}))
    assert unknown["failed"] and "nosuchcloud" in unknown["msg"] and "clouds.yaml" in unknown["msg"]
    no_region = run_module("image_info", library.args(openstack={"region_name": "RegionNine"}))
    assert no_region["failed"] and "RegionNine" in no_region["msg"] and "openstack.region_name" in no_region["msg"]

    wrong = library.args(openstack={"cloud": None, "auth": openstack_cloud.auth(password="Wrong-Pa55word-xyz")})
    denied = run_module("image_info", wrong)
    assert denied["failed"] and "credentials" in denied["msg"]
    assert "Wrong-Pa55word-xyz" not in json.dumps(denied)

    good = run_module("image_info", library.args(openstack={"cloud": None, "auth": openstack_cloud.auth()}))
    assert not good.get("failed") and openstack_cloud.password not in json.dumps(good)
    assert oct(os.stat(openstack_cloud.clouds_yaml).st_mode & 0o777) == "0o600"


def test_peer_has_two_regions_and_no_password_on_any_command_line(openstack_cloud):
    conn = openstack_cloud.connect("RegionOne")
    regions = sorted(r.id for r in conn.identity.regions())
    image_service = next(s for s in conn.identity.services() if s.type == "image")
    image_endpoints = sorted(e.region_id for e in conn.identity.endpoints(service_id=image_service.id))
    conn.close()
    assert regions == ["RegionOne", "RegionTwo"] and image_endpoints == ["RegionOne", "RegionTwo"]
    assert openstack_cloud.start_seconds > 0
    services = openstack_cloud.leftovers()  # the running services
    assert services
    for pid in services:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            assert openstack_cloud.password.encode() not in handle.read()


def test_web_download_lets_glance_fetch_the_object_and_a_refused_url_falls_back_to_upload(library):
    body = library.qcow2("fetched")
    key = library.upload(T1, body)
    fetched = run_module("image_import", library.args(key=key, openstack={"import_method": "web-download"}))
    assert not fetched.get("failed"), fetched.get("msg")
    image = fetched["image"]
    assert image["import_method"] == "web-download" and image["import_note"] is None, image["import_note"]
    made = library.glance.image.get_image(image["id"])
    assert made.status == "active" and made.hash_value == hashlib.sha512(body).hexdigest()
    assert b"".join(library.glance.image.download_image(made, stream=True).iter_content(1 << 20)) == body
    assert "X-Amz-Signature" not in json.dumps(fetched) and "Signature=" not in json.dumps(fetched)

    # RegionTwo's import filtering refuses host "localhost": the same bucket named so is uploaded instead.
    key2 = library.upload(T2, library.qcow2("refused"))
    cos = dict(library.s3.cos(), endpoint=library.s3.endpoint.replace("127.0.0.1", "localhost"))
    refused = run_module("image_import", library.args(key=key2, cos=cos, openstack={"import_method": "web-download"}))
    assert not refused.get("failed"), refused
    assert refused["image"]["import_method"] == "upload" and "refused web-download of the object (HTTP 400" in refused["image"]["import_note"]
    assert "Signature" not in json.dumps(refused) and library.s3.secret_access_key not in json.dumps(refused)
    assert library.names() == ["app01-20260401-100000", "app01-latest"]
