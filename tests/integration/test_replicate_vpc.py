"""playbooks/replicate.yml with provider ibm_vpc and target ibm_vpc, through ansible-runner, against the VPC emulator subprocess.

The real ibm-vpc SDK talks to the emulator; the snapshot's volume is attached as a real loop device whose ``virtio-<serial>``
link the role finds in the emulator's by-id dir; real qemu-img streams it into a QCOW2 object on the real S3 server (rclone);
the emulator's eu-de imports it from ``cos://`` after checking it with qemu-img. "Nothing leaked" is read from the emulator's
state (volumes, attachments, snapshots, loop devices), the by-id dir, the bucket's multipart uploads and the work dirs.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid

import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc.vpc_v1 import VpcV1

from tests.emulators.vpc_control import start
from tests.integration.replication import Site, build_disk, changed_count, qemu_compare, summary
from tests.peers.runner import run_playbook

API_KEY = "vpcFleetKey-R7mQ2xZ9pLw4Ks8Tn3Vd"
SOURCE, ZONE, TARGET = "us-south", "us-south-1", "eu-de"
SERVER = "web01"
ATTEMPTS = 4  # max_retries=3: one call and three retries

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode != 0,
    reason="the VPC emulator's attachments are loop devices: they need root and a free /dev/loopN")


@pytest.fixture(scope="module")
def source_disk(tmp_path_factory):
    """A small real ext4 disk: the boot volume's bytes."""
    return build_disk(str(tmp_path_factory.mktemp("vpc-disk") / "boot.img"), size="32M", fill=0.4)


@pytest.fixture(scope="module")
def emulator(s3_rclone, tmp_path_factory):
    """One emulator for the module (us-south and eu-de) whose image imports read the rclone S3 server; the tests run in order on it."""
    base = tmp_path_factory.mktemp("emulator")
    (base / "data").mkdir()
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
        # The emulator moves a state within its delay (0.1 s): looking every 0.2 s instead of every 2 s.
        vpc = dict(api_key="{{ vpc_api_key }}", iam_url=self.emu.iam_url, max_retries=3, retry_interval=0.05, wait_sleep=0.2)
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
        for name in extra_vars.pop("unset", ()):
            group_vars.pop(name)
        group_vars.update(extra_vars)
        return {"servers": {"hosts": {name: {} for name in self.disks}, "vars": group_vars}}

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


@pytest.fixture(scope="module")
def site(tmp_path_factory, s3_rclone, emulator, source_disk):
    emulator.seed_instance(SOURCE, name="conversion-host", zone=ZONE)
    instance = emulator.seed_instance(SOURCE, name=SERVER, zone=ZONE, boot_capacity=10, operating_system_name="debian-12-amd64")
    with open(source_disk, "rb") as handle:
        emulator.write_volume(instance["boot_volume_attachment"]["volume"]["id"], handle.read())
    site = VpcSite(str(tmp_path_factory.mktemp("vpc-site")), s3_rclone, s3_rclone.make_bucket("v-%s" % uuid.uuid4().hex[:12]),
                   {SERVER: source_disk}, keep_last=3)
    site.emu, site.boot = emulator, instance["boot_volume_attachment"]["volume"]["id"]
    site.baseline = site.temporaries()
    return site


def assert_key_nowhere(run):
    """The API key is in no output, event or artifact file of the run."""
    run.assert_nowhere(API_KEY)


def test_replicate_a_vpc_server_into_eu_de(site, tmp_path):
    run = site.run(replication_keep_objects=True)  # kept, to compare its contents below
    assert_key_nowhere(run)
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated" and result["error"] is None, result
    assert result["latest"] == result["image"] and result["previous_latest"] is None
    # The object in the bucket is the source disk: qemu-img compares the contents.
    image = site.download(result["key"], str(tmp_path / "web01.qcow2"))
    compared = qemu_compare(site.disks[SERVER], image)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    # The temporary volume, its attachment and the snapshot made for this copy are gone, with their loop device and link.
    assert site.temporaries() == site.baseline
    assert site.leftovers() == {}
    images = site.images()
    assert sorted(images) == ["web01-latest"]
    latest = images["web01-latest"]
    assert latest["status"] == "available" and latest["operating_system"]["name"] == "debian-12-amd64"
    assert latest["file"]["checksums"]["sha256"] == result["sha256"]
    assert re.search(r"web01: replicated %s as web01-latest" % result["image"], run.stdout), run.stdout
    objects = site.objects()

    assert result["key"] in objects

    # VPC gives no fingerprint of a volume, so a re-run snapshots and reads it again (docs/ibm-vpc.md); the guest digest of
    # what it read is the latest image's: the server is unchanged, nothing is imported, the new object removed, nothing left.
    again = site.run()  # replication_keep_objects: false, the default
    assert_key_nowhere(again)
    assert again.status == "successful", again.stdout
    same = summary(again)[SERVER]
    assert same["status"] == "unchanged" and same["image"] == result["image"] and same["previous_latest"] is None, same
    assert same["sha256"] == result["sha256"], same
    assert not [e for e in again.events if e["event"] == "runner_on_ok" and e["event_data"].get("task", "").startswith("Register as")]
    assert changed_count(again) > 0  # the snapshot, volume and object of the second copy, all removed
    assert site.images() == images
    # The second copy's object is gone (the first run's, kept, stays).
    assert sorted(site.objects()) == sorted(objects)
    assert site.temporaries() == site.baseline
    assert site.leftovers() == {}


# Each step made to fail in turn, on top of the image made above (replication_force: the run does not stop at "unchanged").
FAULTS = {
    "snapshot fails": lambda emu: emu.fail_next("snapshot"),
    "volume create fails": lambda emu: emu.inject("POST", r"/v1/volumes$", 400, code="bad_field"),
    "attach never attaches": lambda emu: emu.inject("GET", r"/volume_attachments/[^/]+$", 500, count=ATTEMPTS),
    "image import fails": lambda emu: emu.fail_next("image"),
}

ERRORS = {
    "snapshot fails": "Failed to snapshot volume %s: snapshot web01-",
    "volume create fails": "Failed to attach a volume from snapshot web01-",
    "attach never attaches": "Failed to attach a volume from snapshot web01-",
    "image import fails": "Failed to import image",
}


@pytest.mark.parametrize("step", list(FAULTS))
def test_a_failure_at_each_step_leaks_nothing_and_keeps_the_latest(site, step):
    latest = site.images()["web01-latest"]
    objects = site.objects()
    # New bytes, so that each step would make a new image (the same bytes would end at the import keeping the image it has).
    site.emu.write_volume(site.boot, step.encode() * 8192)
    FAULTS[step](site.emu)
    run = site.run(replication_force=True)
    assert_key_nowhere(run)
    assert run.status == "failed", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "failed" and result["error"], result
    assert result["error"].startswith(ERRORS[step].replace("%s", site.boot)), result["error"]
    assert site.emu.state()["faults_left"] == 0
    assert site.temporaries() == site.baseline
    assert site.leftovers() == {}
    assert site.images()["web01-latest"] == latest
    assert sorted(site.objects()) == sorted(objects)


def test_a_rerun_after_the_failures_completes(site):
    latest = site.images()["web01-latest"]
    site.emu.write_volume(site.boot, b"changed boot volume" * 4096)
    run = site.run()
    assert_key_nowhere(run)
    assert run.status == "successful", run.stdout
    result = summary(run)[SERVER]
    assert result["status"] == "replicated" and result["previous_latest"], result
    assert result["key"] not in site.objects()  # imported, then deleted (replication_keep_objects: false)
    images = site.images()
    assert images["web01-latest"]["id"] != latest["id"]
    assert images[result["previous_latest"]]["id"] == latest["id"]
    assert site.temporaries() == site.baseline
    assert site.leftovers() == {}


def _snapshots(site, region):
    client = VpcV1(authenticator=IAMAuthenticator(API_KEY, url=site.emu.iam_url))
    client.set_service_url(site.emu.service_url(region))
    return {s["id"]: s for s in client.list_snapshots(limit=100).get_result()["snapshots"]}


def test_native_mode_copies_the_snapshot_into_eu_de_with_retention(site):
    """replication_mode snapshot_copy: VPC copies the boot volume's snapshot into eu-de; no bucket, no volume, no image."""
    before = {"source": _snapshots(site, SOURCE), "target": _snapshots(site, TARGET), "images": site.images(), "objects": site.objects()}
    vpc = dict(api_key="{{ vpc_api_key }}", iam_url=site.emu.iam_url, max_retries=3, retry_interval=0.05)
    native = dict(replication_mode="snapshot_copy", replication_keep_last=1, unset=["replication_bucket", "replication_cos"],
                  replication_provider_options=dict(ibm_vpc=dict(vpc, region=SOURCE, endpoint=site.emu.url + "/{region}/v1")))

    planned = site.run(check=True, **native)
    assert planned.status == "successful", planned.stdout
    assert summary(planned)[SERVER]["status"] == "would-replicate" and _snapshots(site, TARGET) == before["target"]

    runs = []
    for content in (b"native one" * 4096, b"native two" * 4096):
        site.emu.write_volume(site.boot, content)
        run = site.run(**native)
        assert_key_nowhere(run)
        assert run.status == "successful", run.stdout
        runs.append(summary(run)[SERVER])
    first, second = runs
    target = _snapshots(site, TARGET)
    copies = {i: s for i, s in target.items() if i not in before["target"]}
    # keep_last 1: the second run's copy replaced the first one's, in eu-de, and its snapshot the first's in us-south.
    assert first["status"] == second["status"] == "replicated" and first["latest"] and first["latest"] != second["latest"], runs
    assert second["previous_latest"] == first["latest"] and second["pruned"] == [first["latest"]], second
    assert list(copies) == [second["latest"]] and copies[second["latest"]]["lifecycle_state"] == "stable"
    source = {i: s for i, s in _snapshots(site, SOURCE).items() if i not in before["source"]}
    assert [s["name"] for s in source.values()] == [second["image"]]
    assert copies[second["latest"]]["source_snapshot"]["crn"] == next(iter(source.values()))["crn"]
    # Nothing else was made: no volume or attachment (no conversion host), no image, no object.
    counts, loops, links = site.temporaries()
    assert counts["volume"] == site.baseline[0]["volume"] and counts["volume_attachment"] == site.baseline[0]["volume_attachment"]
    assert (loops, links) == site.baseline[1:]
    assert site.images() == before["images"] and site.objects() == before["objects"] and site.leftovers() == {}

    # Recovery in eu-de boots from the newest copy (recover.yml follows replication_mode), with the second run's bytes.
    recover = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "playbooks", "recover.yml")
    dr = dict(ibm_vpc=dict(vpc, endpoint=site.emu.service_url(TARGET)))
    recovered = site.run_playbook(recover, replication_recover_region=TARGET, replication_recover_options=dr,
                                  replication_recover_vpc_name="dr-native", replication_recover_wait_sleep=0.05, **native)
    assert_key_nowhere(recovered)
    assert recovered.status == "successful", recovered.stdout
    assert recovered.custom_stats()["vmimage_recover"]["instances"] == [SERVER]
    client = VpcV1(authenticator=IAMAuthenticator(API_KEY, url=site.emu.iam_url))
    client.set_service_url(site.emu.service_url(TARGET))
    instance = next(i for i in client.list_instances().get_result()["instances"] if i["vpc"]["name"] == "dr-native")
    boot = client.get_volume(instance["boot_volume_attachment"]["volume"]["id"]).get_result()
    assert boot["source_snapshot"]["id"] == second["latest"], boot
    data_dir = os.path.join(os.path.dirname(site.emu.by_id_path), "data")
    with open(os.path.join(data_dir, boot["id"] + ".img"), "rb") as handle:
        assert handle.read(len(b"native two") * 4096) == b"native two" * 4096
    gone = site.run_playbook(recover, replication_recover_region=TARGET, replication_recover_options=dr,
                             replication_recover_vpc_name="dr-native", replication_recover_state="absent",
                             replication_recover_wait_sleep=0.05, **native)
    assert gone.status == "successful", gone.stdout


def test_native_mode_refuses_a_target_it_cannot_copy_to(site):
    run = site.run(replication_mode="snapshot_copy", replication_target="bucket_catalog", replication_target_options={})
    assert run.status == "failed", run.stdout
    error = summary(run)[SERVER]["error"]
    assert "replication_mode snapshot_copy copies VPC snapshots from one region to another" in error, error
    assert "now ibm_vpc to bucket_catalog" in error, error
