"""Peers of the provider contract tests: one per adapter, each able to make a "server" the adapter can find.

A peer answers:
  ``provider``                    the provider's name (for skip messages);
  ``source(**params)``            the adapter under test, built from module-style params;
  ``server_params(name)``         the params that let ``server_info`` find server ``name`` ({} where the name suffices);
  ``make_server(name, data)``     a server on the peer whose boot volume holds ``data`` (bytes); returns its name;
  ``write_volume(name, data)``    overwrite the boot volume's bytes (the server "changes");
  ``read_volume(name)``           the boot volume's bytes;
  ``read_device(device, size)``   the first ``size`` bytes of an attached device on the conversion host;
  ``foreign_snapshot(name)``      a snapshot of the server that the collection did not make; returns its name;
  ``host``                        the conversion host's id for ``volume_attach``.
Optional:
  ``boot_volume_size``            the boot volume's size as server_info reports it (default: the bytes written);
  ``restore_makes_new_volume``    True where restore cannot roll a volume back (VPC): ``read_restored(result)`` then
                                  reads the new volume that ``snapshot_restore`` answered with.

A new adapter joins by adding its peer to ``PEERS`` (an emulator-backed one starts its emulator in the fixture).

Target peers (``TARGET_PEERS``, fixture ``target_peer``) answer:
  ``target(**params)``            the Target adapter for server ``params["server"]``;
  ``upload(server, snapshot_time, body)``  an image object as cos_upload leaves it; returns its key;
  ``break_object(key)``           make the object unreadable as an image (the import must fail).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import uuid

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers
from tests.emulators.fixtures import openstack_emulator, vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import


class LocalPeer:
    """Provider local: a server is a raw disk image file; with ``loop`` the attach is a real read-only loop device."""

    provider = "local"
    host = "localhost"

    def __init__(self, root, loop=False):
        self.root, self.loop = root, loop
        self.volumes = root / "volumes"
        self.volumes.mkdir()
        self.snapshot_dir = str(root / "snapshots")

    def source(self, **params):
        base = {"provider": "local", "snapshot_dir": self.snapshot_dir, "loop": self.loop, "volumes": None}
        base.update(params)
        return _providers.source(base)

    def _path(self, name):
        return self.volumes / ("%s.img" % name)

    def server_params(self, name):
        """The params that let ``server_info`` find server ``name`` (local: its volumes)."""
        return {"volumes": [str(self._path(name))]}

    def make_server(self, name, data):
        self._path(name).write_bytes(data)
        return name

    def write_volume(self, name, data):
        path = self._path(name)
        path.write_bytes(data)
        stamp = os.stat(path).st_mtime_ns + 10 ** 9  # a new state even on a coarse clock
        os.utime(path, ns=(stamp, stamp))

    def read_volume(self, name):
        return self._path(name).read_bytes()

    def read_device(self, device, size):
        with open(device, "rb") as handle:
            return handle.read(size)

    def foreign_snapshot(self, name):
        os.makedirs(self.snapshot_dir, exist_ok=True)
        snap = "%s-operator" % name
        with open(os.path.join(self.snapshot_dir, snap + ".raw"), "wb") as handle:
            handle.write(self.read_volume(name))
        with open(os.path.join(self.snapshot_dir, snap + ".snapshot.json"), "w", encoding="utf-8") as handle:
            json.dump({"name": snap, "server": name, "created-by": "an operator"}, handle)
        return snap

    def volume_id(self, name):
        return str(self._path(name))


def _loop_available():
    return os.geteuid() == 0 and subprocess.run(["losetup", "--find"], capture_output=True, check=False).returncode == 0


def local_file(tmp_path):
    return LocalPeer(tmp_path)


def local_loop(tmp_path):
    if not _loop_available():
        pytest.skip("loop devices need root and a free /dev/loopN")
    return LocalPeer(tmp_path, loop=True)


class VpcPeer:
    """Provider ibm_vpc: a fresh VPC emulator subprocess (tests/emulators) driven by the real SDK; volumes are files,
    an attachment is a real loop device with its virtio-<device.id> link. Restore makes a new volume (VPC has no rollback)."""

    provider = "ibm_vpc"
    region = "us-south"
    zone = "us-south-1"
    boot_volume_size = 10 * 1024 ** 3  # VPC volumes are whole GB, 10 at least
    restore_makes_new_volume = True

    def __init__(self, emulator):
        self.emu = emulator
        self.boot = {}
        self.host = emulator.seed_instance(self.region, name="conversion-host", zone=self.zone)["id"]

    def settings(self, **extra):
        return dict(api_key=self.emu.api_key_for_tests, region=self.region, endpoint=self.emu.service_url(self.region),
                    iam_url=self.emu.iam_url, by_id_dir=self.emu.by_id_path, max_retries=2, retry_interval=0.05, **extra)

    def source(self, **params):
        base = {"provider": "ibm_vpc", "ibm_vpc": self.settings(), "wait_timeout": 30, "wait_sleep": 0.05}
        base.update(params)
        return _providers.source(base)

    def server_params(self, name):
        return {}

    def make_server(self, name, data):
        inst = self.emu.seed_instance(self.region, name=name, zone=self.zone, boot_capacity=10)
        self.boot[name] = inst["boot_volume_attachment"]["volume"]["id"]
        self.emu.write_volume(self.boot[name], data)
        return name

    def write_volume(self, name, data):
        self.emu.write_volume(self.boot[name], data)

    def _file(self, volume_id):
        return os.path.join(self.emu.data_path, volume_id + ".img")

    def read_volume(self, name):
        with open(self._file(self.boot[name]), "rb") as handle:
            return handle.read()

    def read_restored(self, result):
        with open(self._file(result["restored_volume"]["id"]), "rb") as handle:
            return handle.read()

    def read_device(self, device, size):
        with open(device, "rb") as handle:
            return handle.read(size)

    def foreign_snapshot(self, name):
        """A snapshot an operator took in the console: no created-by tag."""
        snap = "%s-operator" % name
        self.source().call("take a foreign snapshot", snap, "create_snapshot", {"source_volume": {"id": self.boot[name]}, "name": snap})
        return snap

    def volume_id(self, name):
        return self.boot[name]


def ibm_vpc_emulator(tmp_path, request):
    if not _loop_available():
        pytest.skip("the VPC emulator's attachments are loop devices: they need root and a free /dev/loopN")
    return VpcPeer(request.getfixturevalue("vpc_emulator_factory")(delay=0.05))


class OpenStackSourcePeer:
    """Provider openstack: Cinder and Nova emulated (tests/emulators/openstack_server.py) behind the real Keystone; a
    conversion host's attachment is a loop device with its virtio-<volume id> link. Cinder reverts only a detached volume."""

    provider = "openstack"
    boot_volume_size = 1024 ** 3  # Cinder sizes are whole GB
    restore_needs_detached = True
    SPAN = 4 * 1024 * 1024  # the contract's data is 2 MiB: the rest of the 1 GB volume is a hole

    def __init__(self, request):
        self.cloud = request.getfixturevalue("openstack_cloud")
        self.emu = request.getfixturevalue("openstack_emulator")
        self.emu.reset()
        self.boot = {}
        self.host = self.emu.seed_server("conversion-host", conversion_host=True)["id"]
        conn = self.cloud.connect("RegionOne")
        try:  # the session's RegionOne Glance (and Ceph) are shared, and hold only these tests' snapshot images: emptied
            for image in list(conn.image.images()):
                conn.image.delete_image(image, ignore_missing=True)
        finally:
            conn.close()
        if self.cloud.ceph is not None:
            for pool in ("images", "volumes"):
                self.cloud.ceph.purge(pool)

    def settings(self):
        return {"auth": self.cloud.auth(), "region_name": "RegionOne", "interface": "public", "timeout": 60, "wait_sleep": 0.05,
                "by_id_dir": self.emu.cloud.by_id_dir}

    def source(self, **params):
        base = {"provider": "openstack", "openstack": self.settings(), "wait_sleep": 0.05}
        base.update(params)
        return _providers.source(base)

    def server_params(self, name):
        return {}

    def make_server(self, name, data):
        self.boot[name] = self.emu.seed_server(name, data)["boot_volume"]
        return name

    def write_volume(self, name, data):
        with open(self.emu.volume_path(self.boot[name]), "r+b") as handle:
            handle.write(data)

    def read_volume(self, name):
        with open(self.emu.volume_path(self.boot[name]), "rb") as handle:
            return handle.read(self.SPAN)

    def read_device(self, device, size):
        with open(device, "rb") as handle:
            return handle.read(size)

    def detach(self, name):
        self.emu.release_volume(self.boot[name])

    def foreign_snapshot(self, name):
        """A snapshot an operator took with the openstack CLI: no created-by metadata."""
        snap = "%s-operator" % name
        conn = self.cloud.connect("RegionOne")
        try:
            made = conn.block_storage.create_snapshot(volume_id=self.boot[name], name=snap, force=True)
            conn.block_storage.wait_for_status(made, "available", interval=0.05, wait=30)
        finally:
            conn.close()
        return snap

    def volume_id(self, name):
        return self.boot[name]


class OpenStackImagePeer(OpenStackSourcePeer):
    """Provider openstack, image-backed servers: the root disk is the hypervisor's (a file of the emulator), the snapshot is
    Nova's createImage into RegionOne's real Glance, the conversion host reads a Cinder volume made from that image."""

    restore_refused = "rebuild the server from it"
    restore_needs_detached = False

    def make_server(self, name, data):
        self.boot[name] = self.emu.seed_server(name, data, image_id="00000000-0000-4000-8000-000000000000")["disk"]
        return name

    def write_volume(self, name, data):
        with open(self.boot[name], "r+b") as handle:
            handle.write(data)

    def read_volume(self, name):
        with open(self.boot[name], "rb") as handle:
            return handle.read(self.SPAN)

    def foreign_snapshot(self, name):
        """A snapshot image an operator made with ``openstack server image create``: no created-by property."""
        snap = "%s-operator" % name
        conn = self.cloud.connect("RegionOne")
        try:
            server = next(s for s in conn.compute.servers(name="^%s$" % name))
            conn.compute.create_server_image(server, snap, wait=True, timeout=60)
        finally:
            conn.close()
        return snap


def openstack_source(tmp_path, request, peer_class=OpenStackSourcePeer):
    if not _loop_available():
        pytest.skip("the OpenStack emulator's attachments are loop devices: they need root and a free /dev/loopN")
    return peer_class(request)


def openstack_image_source(tmp_path, request):
    return openstack_source(tmp_path, request, OpenStackImagePeer)


ibm_vpc_emulator.wants_request = openstack_source.wants_request = openstack_image_source.wants_request = True
PEERS = {"local": local_file, "local-loop": local_loop, "ibm_vpc": ibm_vpc_emulator, "openstack": openstack_source,
         "openstack-image": openstack_image_source}
# Peers that are costly to start run their tests on one xdist worker (--dist loadgroup), so they start once.
PEER_GROUPS = {"openstack": "openstack", "openstack-image": "openstack"}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.xdist_group(PEER_GROUPS[name])) if name in PEER_GROUPS else name for name in sorted(PEERS)])
def peer(request, tmp_path):
    make = PEERS[request.param]
    return make(tmp_path, request) if getattr(make, "wants_request", False) else make(tmp_path)


class BucketCatalogPeer:
    """Target bucket_catalog on a real S3 server (rclone)."""

    target_name = "bucket_catalog"

    def __init__(self, s3):
        self.s3 = s3
        self.bucket = s3.make_bucket("t-%s" % uuid.uuid4().hex[:16])

    def target(self, **params):
        base = {"target": "bucket_catalog", "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/"}
        base.update(params)
        return _providers.target(base)

    def upload(self, server, snapshot_time, body, **metadata):
        key = _naming.object_key("images/", server, snapshot_time, "qcow2")
        meta = {"created-by": _naming.CREATED_BY, "sha256": hashlib.sha256(body).hexdigest(), "format": "qcow2",
                "snapshot-time": snapshot_time, "source-server": server, **metadata}
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=meta)
        return key

    def break_object(self, key):
        client = self.s3.client()
        meta = client.head_object(Bucket=self.bucket, Key=key)["Metadata"]
        client.put_object(Bucket=self.bucket, Key=key, Body=b"not an image" * 100, Metadata=meta)


class PowerVSPeer(BucketCatalogPeer):
    """Target powervs: the PowerVS emulator (tests/emulators/powervs.py) importing OVAs from rclone."""

    target_name = "powervs"
    API_KEY = "pvsContractKey-4Nq8ZxLm2WcVbT7sRy"

    def __init__(self, request):
        from tests.emulators.powervs import PowerVSEmulator

        s3 = request.getfixturevalue("s3_rclone")
        super().__init__(s3)
        self.emulator = PowerVSEmulator(self.API_KEY, {s3.region: s3.endpoint}, queued_seconds=0.05, running_seconds=0.1, progress_steps=1)
        self.emulator.__enter__()
        request.addfinalizer(lambda: self.emulator.__exit__(None, None, None))
        self.ws = self.emulator.add_workspace(storage_types=("tier3",))

    def target(self, **params):
        powervs = dict(workspace_id=self.ws.id, crn=self.ws.crn, url=self.emulator.url, iam_url=self.emulator.url, api_key=self.API_KEY,
                       storage_type="tier3", bucket_access="private", validate_certs=True, max_retries=2, retry_interval=0.1)
        base = {"target": "powervs", "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/", "powervs": powervs,
                "wait_timeout": 30, "wait_sleep": 0.05}
        base.update(params)
        return _providers.target(base)

    def upload(self, server, snapshot_time, body):
        ova = io.BytesIO()
        with tarfile.open(fileobj=ova, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in (("disk.ovf", b'<Envelope><References><File href="disk1.qcow2"/></References></Envelope>'), ("disk1.qcow2", body)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        data = ova.getvalue()
        key = _naming.object_key("images/", server, snapshot_time, "ova")
        meta = {"created-by": _naming.CREATED_BY, "sha256": hashlib.sha256(data).hexdigest(), "format": "ova",
                "snapshot-time": snapshot_time, "source-server": server}
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=meta)
        return key


class VpcImagesPeer(BucketCatalogPeer):
    """Target ibm_vpc: the VPC emulator (tests/emulators/vpc_images.py) importing QCOW2 objects from rclone, checked with qemu-img."""

    target_name = "ibm_vpc"
    API_KEY = "vpcContractKey-7Hd2LqW9xZr4NtB8mKs"
    REGION = "eu-de"

    def __init__(self, request):
        from tests.emulators.vpc_server import VpcEmulator

        s3 = request.getfixturevalue("s3_rclone")
        super().__init__(s3)
        data = request.getfixturevalue("tmp_path") / "vpc-data"  # image bytes and import work files stay under pytest's tmp dir
        data.mkdir()
        self.emulator = VpcEmulator(self.API_KEY, delay=0.05, data_dir=str(data), s3={
            "endpoint": s3.endpoint, "access_key": s3.access_key_id, "secret_key": s3.secret_access_key, "region": s3.region})
        self.emulator.start()
        request.addfinalizer(self.emulator.stop)

    def target(self, **params):
        vpc = dict(api_key=self.API_KEY, region=self.REGION, endpoint=self.emulator.service_url(self.REGION), iam_url=self.emulator.iam_url,
                   operating_system="debian-12-amd64", cos_region=self.s3.region, max_retries=2, retry_interval=0.05)
        base = {"target": "ibm_vpc", "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/", "ibm_vpc": vpc,
                "wait_timeout": 30, "wait_sleep": 0.05}
        base.update(params)
        return _providers.target(base)

    def break_object(self, key):
        """A QCOW2 magic with a header qemu-img refuses: the collection's own magic check passes, VPC's import fails."""
        client = self.s3.client()
        meta = client.head_object(Bucket=self.bucket, Key=key)["Metadata"]
        client.put_object(Bucket=self.bucket, Key=key, Body=b"QFI\xfb" + b"\xff" * 4096, Metadata=meta)


class OpenStackPeer(BucketCatalogPeer):
    """Target openstack: real Glance (RegionTwo) behind real Keystone (tests/peers/openstack.py), importing from rclone."""

    target_name = "openstack"

    def __init__(self, request):
        super().__init__(request.getfixturevalue("s3_rclone"))
        self.cloud = request.getfixturevalue("openstack_cloud")
        conn = self.cloud.connect("RegionTwo")
        for image in list(conn.image.images()):  # the session's Glance is shared: each test starts from an empty library
            conn.image.delete_image(image, ignore_missing=True)
        conn.close()

    def target(self, **params):
        base = {"target": "openstack", "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/",
                "openstack": {"auth": self.cloud.auth(), "region_name": "RegionTwo", "interface": "public", "wait": True, "timeout": 120},
                "wait_sleep": 0.2}
        base.update(params)
        return _providers.target(base)


@pytest.fixture(scope="session")
def openstack_cloud(request, tmp_path_factory):
    from tests.peers.openstack import session_peer

    return session_peer(request, tmp_path_factory)


TARGET_PEERS = {"bucket_catalog": lambda request: BucketCatalogPeer(request.getfixturevalue("s3_rclone")), "powervs": PowerVSPeer,
                "ibm_vpc": VpcImagesPeer}


TARGET_PEERS["openstack"] = OpenStackPeer
TARGET_PEER_GROUPS = PEER_GROUPS


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.xdist_group(TARGET_PEER_GROUPS[name])) if name in TARGET_PEER_GROUPS else name
                        for name in sorted(TARGET_PEERS)])
def target_peer(request):
    return TARGET_PEERS[request.param](request)
