"""playbooks/replicate.yml with provider ibm_vpc and target ibm_vpc, through ansible-runner, against the VPC emulator subprocess.

The real ibm-vpc SDK talks to the emulator; the snapshot's volume is attached as a real loop device whose ``virtio-<serial>``
link the role finds in the emulator's by-id dir; real qemu-img streams it into a QCOW2 object on the real S3 server (rclone);
the emulator's eu-de imports it from ``cos://`` after checking it with qemu-img. "Nothing leaked" is read from the emulator's
state (volumes, attachments, snapshots, loop devices), the by-id dir, the bucket's multipart uploads and the work dirs.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc.vpc_v1 import VpcV1

from tests.emulators.vpc_control import start
from tests.integration.replication import PLAYBOOK, Site, build_disk, changed_count, qemu_compare, summary
from tests.peers.runner import run_playbook

API_KEY = "vpcFleetKey-R7mQ2xZ9pLw4Ks8Tn3Vd"
SOURCE, ZONE, TARGET = "us-south", "us-south-1", "eu-de"
SERVER = "web01"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the VPC emulator's attachments are loop devices: they need root and a free /dev/loopN")


@pytest.fixture(scope="module")
def source_disk(tmp_path_factory):
    """A small real ext4 disk: the boot volume's bytes."""
    return build_disk(str(tmp_path_factory.mktemp("vpc-disk") / "boot.img"), size="32M", fill=0.4)


@pytest.fixture
def emulator(s3_rclone, tmp_path):
    """A fresh emulator per test (us-south and eu-de) whose image imports read the rclone S3 server."""
    base = tmp_path / "emulator"
    (base / "data").mkdir(parents=True)
    (base / "by-id").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VPC_EMULATOR_S3_ACCESS_KEY", s3_rclone.access_key_id)
        env.setenv("VPC_EMULATOR_S3_SECRET_KEY", s3_rclone.secret_access_key)
        server = start(API_KEY, data_dir=str(base / "data"), by_id_dir=str(base / "by-id"), delay=0.1, s3_endpoint=s3_rclone.endpoint)
    server.by_id_path = str(base / "by-id")
    try:
        yield server
    finally:
        server.stop()


class VpcSite(Site):
    """A Site whose server is a VPC instance: the API key reaches the run only through a 0600 vars file (-e @file)."""

    emu = None
    boot = None

    @property
    def key_file(self):
        return os.path.join(self.root, "secret", "vpc.yml")

    def write_key_file(self):
        os.makedirs(os.path.dirname(self.key_file), mode=0o700, exist_ok=True)
        with open(os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
            handle.write("vpc_api_key: %s\n" % API_KEY)

    def inventory(self, **extra_vars):
        vpc = dict(api_key="{{ vpc_api_key }}", iam_url=self.emu.iam_url, max_retries=3, retry_interval=0.05)
        group_vars = dict(
            replication_conversion_host="localhost",
            replication_attach_host="conversion-host",
            replication_provider="ibm_vpc",
            replication_provider_options=dict(ibm_vpc=dict(
                vpc, region=SOURCE, endpoint=self.emu.service_url(SOURCE), by_id_dir=self.emu.by_id_path)),
            replication_target="ibm_vpc",
            replication_target_options=dict(ibm_vpc=dict(
                vpc, region=TARGET, endpoint=self.emu.service_url(TARGET))),
            replication_work_dir=self.work_dir,
            replication_bucket=self.bucket,
            replication_keep_last=self.keep_last,
            replication_poll_wait=self.poll_wait,
            replication_cos=dict(endpoint=self.s3.endpoint, region=self.s3.region),
            replication_cos_file=self.cos_file,
        )
        group_vars.update(extra_vars)
        return {"servers": {"hosts": {SERVER: {}}, "vars": group_vars}}

    def run_playbook(self, playbook, check=False, verbosity=0, extravars=None, cancel_callback=None, **extra_vars):
        self.write_cos_file()
        self.write_key_file()
        private_dir = os.path.join(self.root, "runner-%s" % uuid.uuid4().hex[:8])
        os.makedirs(private_dir)
        try:
            return run_playbook(playbook, self.inventory(**extra_vars), extravars=extravars,
                                envvars={"ANSIBLE_ASYNC_DIR": self.async_dir}, verbosity=verbosity,
                                cmdline="-e @%s%s" % (self.key_file, " --check" if check else ""), private_dir=private_dir)
        finally:
            os.unlink(self.cos_file)
            os.unlink(self.key_file)

    # What the emulator holds.
    def images(self, region=TARGET):
        """The private images of ``region`` by name, as the SDK lists them."""
        client = VpcV1(authenticator=IAMAuthenticator(API_KEY, url=self.emu.iam_url))
        client.set_service_url(self.emu.service_url(region))
        return {i["name"]: i for i in client.list_images(limit=100, visibility="private").get_result()["images"]}

    def temporaries(self):
        """Volumes beyond the two boot volumes, attachments beyond the two boot attachments, snapshots, loop devices, links."""
        state = self.emu.state()
        counts = {k: state["records"].get(k, 0) for k in ("volume", "volume_attachment", "snapshot")}
        return counts, state["loop_devices"], sorted(os.listdir(self.emu.by_id_path))

    def leftovers(self):
        left = {}
        for name, path in (("work", self.work_dir), ("async", self.async_dir)):
            entries = sorted(e for e in os.listdir(path) if not e.startswith(".")) if os.path.isdir(path) else []
            # The host lock and slot files of the run live in work_dir only while it runs.
            if entries:
                left[name] = entries
        uploads = self.multipart_uploads()
        if uploads:
            left["uploads"] = [u["Key"] for u in uploads]
        return left


@pytest.fixture
def site(tmp_path, s3_rclone, emulator, source_disk):
    emulator.seed_instance(SOURCE, name="conversion-host", zone=ZONE)
    instance = emulator.seed_instance(SOURCE, name=SERVER, zone=ZONE, boot_capacity=10, operating_system_name="debian-12-amd64")
    with open(source_disk, "rb") as handle:
        emulator.write_volume(instance["boot_volume_attachment"]["volume"]["id"], handle.read())
    site = VpcSite(str(tmp_path), s3_rclone, s3_rclone.make_bucket("v-%s" % uuid.uuid4().hex[:12]), {SERVER: source_disk}, keep_last=3,
                   poll_wait=0.5)
    site.emu, site.boot = emulator, instance["boot_volume_attachment"]["volume"]["id"]
    return site


def test_replicate_a_vpc_server_into_eu_de(site, tmp_path):
    before = site.temporaries()
    run = site.run()
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated", result
    assert result["latest"] == result["image"]
    # The object in the bucket is the source disk: qemu-img compares the contents.
    image = site.download(result["key"], str(tmp_path / "web01.qcow2"))
    compared = qemu_compare(site.disks[SERVER], image)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert site.temporaries() == before
    assert site.leftovers() == {}
    images = site.images()
    print(sorted(images), images.get("web01-latest"))
    print(run.stdout[-3000:])
