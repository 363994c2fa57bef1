"""playbooks/replicate.yml from OpenStack RegionOne into RegionTwo's Glance, through a bucket, with ansible-runner.

One real Keystone serves both regions (tests/peers/openstack.py); RegionOne's Cinder and Nova are the emulator of
tests/emulators/openstack_server.py, RegionTwo's Glance is real. openstacksdk reaches them through the peer's
clouds.yaml (cloud ``peer``: the password is only in that 0600 file). The snapshot's volume is attached to the
conversion host's server as a real loop device found by its serial; real qemu-img streams it into a QCOW2 object on
the real S3 server (rclone); Glance stores it and its hash is checked against what was sent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid

import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc.vpc_v1 import VpcV1

from tests.emulators import vpc_control
from tests.emulators.fixtures import openstack_emulator  # noqa: F401 pylint: disable=unused-import
from tests.integration.replication import Site, build_disk, qemu_compare, summary
from tests.peers.openstack import session_peer
from tests.peers.runner import run_playbook

pytestmark = [pytest.mark.xdist_group("openstack"), pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the OpenStack emulator's attachments are loop devices: they need root and a free /dev/loopN")]

SERVER = "web01"


@pytest.fixture(scope="session")
def openstack_cloud(request, tmp_path_factory):
    return session_peer(request, tmp_path_factory)


class OpenStackSite(Site):
    cloud = None
    emu = None
    boot = None
    vars_file = None  # a 0600 file of secret variables given with -e @file (never in the inventory)

    def inventory(self, **extra_vars):
        fast = {"cloud": "peer", "timeout": 120, "wait_sleep": 0.1}
        group_vars = dict(
            replication_conversion_host="localhost",
            replication_attach_host="conversion-host",
            replication_provider="openstack",
            replication_provider_options={"openstack": dict(fast, region_name="RegionOne", by_id_dir=self.emu.cloud.by_id_dir)},
            replication_target="openstack",
            replication_target_options={"openstack": dict(fast, region_name="RegionTwo")},
            replication_work_dir=self.work_dir,
            replication_bucket=self.bucket,
            replication_keep_last=self.keep_last,
            replication_poll_wait=self.poll_wait,
            replication_cos=dict(endpoint=self.s3.endpoint, region=self.s3.region),
            replication_cos_file=self.cos_file,
        )
        group_vars.update(extra_vars)
        return {"servers": {"hosts": {name: {} for name in self.disks}, "vars": group_vars}}

    def run_playbook(self, playbook, check=False, verbosity=0, extravars=None, cancel_callback=None, **extra_vars):
        self.write_cos_file()
        private_dir = os.path.join(self.root, "runner-%s" % uuid.uuid4().hex[:8])
        os.makedirs(private_dir)
        try:
            return run_playbook(playbook, self.inventory(**extra_vars), extravars=extravars, private_dir=private_dir,
                                envvars={"ANSIBLE_ASYNC_DIR": self.async_dir, "OS_CLIENT_CONFIG_FILE": self.cloud.clouds_yaml},
                                verbosity=verbosity, cmdline=" ".join(filter(None, ["-e @%s" % self.vars_file if self.vars_file else None,
                                                                                    "--check" if check else None])) or None)
        finally:
            os.unlink(self.cos_file)

    def images(self):
        """RegionTwo's images by name."""
        conn = self.cloud.connect("RegionTwo")
        try:
            return {i.name: i for i in conn.image.images()}
        finally:
            conn.close()

    def download_image(self, image_id, path):
        conn = self.cloud.connect("RegionTwo")
        try:
            with open(path, "wb") as handle:
                conn.image.download_image(image_id, output=handle)
        finally:
            conn.close()
        return path

    def temporaries(self):
        """What the run may not leave in RegionOne: volumes besides the two boot volumes, snapshots, attachments, loops, links."""
        self.emu.cloud.settle(wait=True)
        with self.emu.cloud.lock:
            boots = {a["volume_id"] for s in self.emu.cloud.servers.values() for a in s["attached"] if a["device"] == "/dev/vda"}
            volumes = sorted(v["name"] or "" for v in self.emu.cloud.volumes.values() if v["id"] not in boots)
            snapshots = sorted(s["name"] for s in self.emu.cloud.snapshots.values())
        return {"volumes": volumes, "snapshots": snapshots, **self.emu.leftovers()}

    def leftovers(self):
        left = {name: sorted(os.listdir(path)) for name, path in (("work", self.work_dir), ("async", self.async_dir))
                if os.path.isdir(path) and os.listdir(path)}
        if self.multipart_uploads():
            left["uploads"] = [u["Key"] for u in self.multipart_uploads()]
        return left


@pytest.fixture(scope="module")
def site(tmp_path_factory, s3_rclone, openstack_cloud, openstack_emulator):  # noqa: F811
    disk = build_disk(str(tmp_path_factory.mktemp("os-disk") / "boot.img"), size="32M", fill=0.4)
    conn = openstack_cloud.connect("RegionTwo")
    for image in list(conn.image.images()):  # the session's Glance is shared: this module starts from an empty library
        conn.image.delete_image(image, ignore_missing=True)
    conn.close()
    openstack_emulator.reset()
    openstack_emulator.seed_server("conversion-host", conversion_host=True)
    with open(disk, "rb") as handle:
        boot = openstack_emulator.seed_server(SERVER, handle.read(), image_properties={  # its boot volume was made from an image
            "os_distro": "debian", "hw_disk_bus": "virtio", "os_hash_value": "not-copied", "architecture": "x86_64"})["boot_volume"]
    site = OpenStackSite(str(tmp_path_factory.mktemp("os-site")), s3_rclone, s3_rclone.make_bucket("o-%s" % uuid.uuid4().hex[:12]),
                         {SERVER: disk}, keep_last=3)
    site.cloud, site.emu, site.boot = openstack_cloud, openstack_emulator, boot
    yield site
    openstack_emulator.reset()


NOTHING = {"volumes": [], "snapshots": [], "loops": [], "links": []}


def test_replicate_an_openstack_server_into_another_regions_glance(site, tmp_path):
    run = site.run(replication_keep_objects=True)  # kept, to compare its contents below
    run.assert_nowhere(site.cloud.password)
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated" and result["error"] is None, result
    # The object is the boot volume's content (qemu-img compares the 1 GB volume file with it).
    compared = qemu_compare(site.emu.volume_path(site.boot), site.download(result["key"], str(tmp_path / "web01.qcow2")))
    assert compared.returncode == 0, compared.stdout + compared.stderr
    images = site.images()
    assert sorted(images) == ["web01-latest"]
    latest = images["web01-latest"]
    # The source's os_* / hw_* image properties and its 1 GB boot volume as min_disk, with no target option naming them.
    assert latest.status == "active" and latest.disk_format == "qcow2" and latest.container_format == "bare" and latest.min_disk == 1
    props = latest.properties
    assert props["vmimage_server"] == SERVER and props["vmimage_sha256"] == result["sha256"] and latest.os_distro == "debian"
    assert latest.hw_disk_bus == "virtio" and latest.architecture is None and latest.hash_value != "not-copied"
    assert props["vmimage_guest_sha256"] and props["vmimage_key"] == result["key"]
    stored = site.download_image(latest.id, str(tmp_path / "glance.qcow2"))
    with open(stored, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == result["sha256"]
    # The snapshot, the volume made from it, its attachment, loop device and link are gone.
    assert site.temporaries() == NOTHING
    assert site.leftovers() == {}
    calls = site.emu.cloud.calls
    assert ("POST", "/volume/snapshots") in calls and ("POST", "/volume/volumes") in calls
    assert any(m == "POST" and p.endswith("/os-volume_attachments") for m, p in calls)

    # Cinder has no fingerprint of a volume: a re-run reads it again, and its guest digest is the latest image's.
    again = site.run()
    again.assert_nowhere(site.cloud.password)
    assert again.status == "successful", again.stdout
    same = summary(again)[SERVER]
    assert same["status"] == "unchanged" and same["image"] == result["image"], same
    assert {i: images[i].id for i in images} == {i: j.id for i, j in site.images().items()}
    assert site.temporaries() == NOTHING and site.leftovers() == {}


def test_a_failed_attach_leaks_nothing_and_keeps_the_latest(site):
    latest = site.images()["web01-latest"]
    with open(site.emu.volume_path(site.boot), "r+b") as handle:
        handle.write(b"changed" * 4096)
    site.emu.inject("POST", r"/os-volume_attachments$", 400, "Invalid volume: injected by the test")
    run = site.run()
    run.assert_nowhere(site.cloud.password)
    assert run.status == "failed", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "failed" and result["error"].startswith("Failed to attach a volume from snapshot web01-"), result
    assert "injected by the test" in result["error"] and site.emu.faults_left() == 0
    assert site.temporaries() == NOTHING and site.leftovers() == {}
    assert site.images()["web01-latest"].id == latest.id


def test_a_changed_volume_becomes_the_new_latest(site):
    before = site.images()
    run = site.run()
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated" and result["previous_latest"], result
    images = site.images()
    assert images["web01-latest"].id != before["web01-latest"].id
    assert images[result["previous_latest"]].id == before["web01-latest"].id
    assert result["key"] not in site.objects()  # imported, then deleted (replication_keep_objects: false)
    assert site.temporaries() == NOTHING and site.leftovers() == {}


VPC_KEY = "osToVpcKey-W3nR8qZt5LmX2Jv9Kd4P"


@pytest.fixture
def vpc_target(s3_rclone, tmp_path):
    """The VPC emulator (subprocess) whose eu-de imports read the rclone S3 server."""
    (tmp_path / "data").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VPC_EMULATOR_S3_ACCESS_KEY", s3_rclone.access_key_id)
        env.setenv("VPC_EMULATOR_S3_SECRET_KEY", s3_rclone.secret_access_key)
        server = vpc_control.start(VPC_KEY, data_dir=str(tmp_path / "data"), delay=0.1, s3_endpoint=s3_rclone.endpoint)
    try:
        yield server
    finally:
        server.stop()


def test_an_openstack_server_into_the_ibm_vpc_image_library(site, vpc_target, tmp_path):
    """OpenStack -> COS -> IBM VPC: the same source, the VPC target (emulator) registering the object from the bucket."""
    site.vars_file = str(tmp_path / "secret.yml")
    with open(os.open(site.vars_file, os.O_WRONLY | os.O_CREAT, 0o600), "w", encoding="utf-8") as handle:
        handle.write("vpc_api_key: %s\n" % VPC_KEY)
    vpc = dict(api_key="{{ vpc_api_key }}", iam_url=vpc_target.iam_url, region="eu-de", endpoint=vpc_target.service_url("eu-de"),
               operating_system="debian-12-amd64", max_retries=3, retry_interval=0.05, wait_sleep=0.2)
    try:
        run = site.run(replication_target="ibm_vpc", replication_target_options={"ibm_vpc": vpc})
    finally:
        os.unlink(site.vars_file)
        site.vars_file = None
    run.assert_nowhere(site.cloud.password)
    run.assert_nowhere(VPC_KEY)
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated" and result["latest"] == result["image"], result
    client = VpcV1(authenticator=IAMAuthenticator(VPC_KEY, url=vpc_target.iam_url))
    client.set_service_url(vpc_target.service_url("eu-de"))
    images = {i["name"]: i for i in client.list_images(limit=100, visibility="private").get_result()["images"]}
    assert sorted(images) == ["web01-latest"] and images["web01-latest"]["status"] == "available"
    assert images["web01-latest"]["file"]["checksums"]["sha256"] == result["sha256"]
    assert result["key"] not in site.objects()  # imported, then deleted (replication_keep_objects: false)
    assert site.temporaries() == NOTHING and site.leftovers() == {}


def test_an_image_backed_server_goes_through_nova_create_image(site, tmp_path):
    """No root volume: the snapshot is Nova's createImage into RegionOne's real Glance, the conversion host reads a Cinder
    volume made from it; the snapshot image is removed once the image is in RegionTwo."""
    with open(site.disks[SERVER], "rb") as handle:
        disk = site.emu.seed_server("img01", handle.read(), image_id="00000000-0000-4000-8000-000000000000")["disk"]
    images = OpenStackSite(str(tmp_path / "img-site"), site.s3, site.bucket, {"img01": site.disks[SERVER]}, keep_last=3)
    images.cloud, images.emu = site.cloud, site.emu
    run = images.run()
    run.assert_nowhere(site.cloud.password)
    assert run.status == "successful", run.stdout
    result = summary(run)["img01"]
    assert result["status"] == "replicated" and result["latest"] == result["image"], result
    stored = images.download_image(images.images()["img01-latest"].id, str(tmp_path / "img01.qcow2"))
    compared = qemu_compare(disk, stored)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    img01 = next(s["id"] for s in site.emu.cloud.servers.values() if s["name"] == "img01")
    assert ("POST", "/compute/servers/%s/action" % img01) in site.emu.cloud.calls
    conn = site.cloud.connect("RegionOne")
    try:  # the snapshot image Nova made of img01 is gone (other tests of the session may keep images in RegionOne)
        assert [i.name for i in conn.image.images() if i.instance_uuid == img01] == []
    finally:
        conn.close()
    assert images.temporaries() == NOTHING and images.leftovers() == {}
