"""A fleet of VPC servers: 8 instances of the VPC emulator over 2 conversion hosts, at most 2 at once on each.

The conversion hosts are real sshd on 127.0.0.2 and 127.0.0.3, each also a VPC instance of the emulator (in the
volumes' zone) that it names with its own ``replication_attach_host``: each server's volume is attached to the instance of
the host that took it, as a real loop device, and streamed there by real qemu-img into the real S3 server; eu-de imports
every image. The real ibm-vpc SDK does every call.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.integration.replication import PLAYBOOK, build_disk, qemu_compare, summary
from tests.integration.test_fleet import ADDRESSES, assert_spread_two_at_a_time, failures, fleet_inventory
# pytestmark: the same skip (the emulator's attachments are loop devices: root and a free /dev/loopN).
from tests.integration.test_replicate_vpc import SOURCE, ZONE, VpcSite, assert_key_nowhere, emulator, pytestmark  # noqa: F401  # pylint: disable=unused-import
from tests.peers.runner import run_playbook

SERVERS = ["vsrv%02d" % index for index in range(8)]
ATTACH = "Attach a volume from the snapshot to the conversion host"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, s3_rclone, emulator):  # noqa: F811  # pylint: disable=redefined-outer-name
    """Eight VPC servers (two kinds of boot disk) and the two conversion hosts' instances, all in one zone."""
    base = tmp_path_factory.mktemp("vpc-fleet")
    disks = [build_disk(str(base / "a.img"), size="32M", fill=0.5), build_disk(str(base / "b.img"), size="24M", fill=0.4)]
    instances = {name: emulator.seed_instance(SOURCE, name="%s-instance" % name, zone=ZONE)["id"] for name in ("conv1", "conv2")}
    for index, server in enumerate(SERVERS):
        made = emulator.seed_instance(SOURCE, name=server, zone=ZONE, boot_capacity=10, operating_system_name="debian-12-amd64")
        with open(disks[index % 2], "rb") as handle:
            emulator.write_volume(made["boot_volume_attachment"]["volume"]["id"], handle.read())
    site = VpcSite(str(base / "site"), s3_rclone, s3_rclone.make_bucket("f-%s" % uuid.uuid4().hex[:12]),
                   {server: disks[index % 2] for index, server in enumerate(SERVERS)})
    site.emu, site.instances = emulator, instances
    site.baseline = site.temporaries()
    return site


def test_eight_vpc_servers_over_two_conversion_hosts_two_at_a_time(fleet, sshd_factory, tmp_path):
    hosts = [sshd_factory(address) for address in ADDRESSES]
    # The objects are kept, to compare two of them with their sources below.
    inventory = fleet_inventory(fleet, hosts, slots=2)
    inventory["servers"]["vars"]["replication_keep_objects"] = True
    del inventory["servers"]["vars"]["replication_attach_host"]  # each conversion host names its own instance
    for name, host_vars in inventory["conversion_hosts"]["hosts"].items():
        host_vars["replication_attach_host"] = "%s-instance" % name
    fleet.write_cos_file()
    fleet.write_key_file()
    try:
        run = run_playbook(PLAYBOOK, inventory, cmdline="--forks 8 -e @%s" % fleet.key_file,
                           envvars={"ANSIBLE_ASYNC_DIR": fleet.async_dir}, private_dir=str(tmp_path / "runner"))
    finally:
        os.unlink(fleet.cos_file)
        os.unlink(fleet.key_file)
    assert_key_nowhere(run)
    assert run.status == "successful", failures(run)
    results = summary(run)
    assert sorted(results) == SERVERS and {r["status"] for r in results.values()} == {"replicated"}, results

    # Every server is its own <server>-latest in eu-de, from the object its run uploaded.
    images = fleet.images()
    assert sorted(images) == sorted("%s-latest" % server for server in SERVERS), sorted(images)
    for server in SERVERS:
        image = images["%s-latest" % server]
        assert image["status"] == "available" and image["file"]["checksums"]["sha256"] == results[server]["sha256"], server
    # The bytes went through: the object of each kind of disk, compared with its source by qemu-img.
    for server in SERVERS[:2]:
        compared = qemu_compare(fleet.disks[server], fleet.download(results[server]["key"], str(tmp_path / ("%s.qcow2" % server))))
        assert compared.returncode == 0, compared.stdout + compared.stderr

    # Round-robin over the pool, at most two at once per host, and each volume attached to the instance of its host.
    by_address = assert_spread_two_at_a_time(run, SERVERS)
    attached = {item["event_data"]["host"]: (item["event_data"].get("res") or {}).get("attachment", {}).get("host")
                for item in run.events if item["event"] == "runner_on_ok" and item["event_data"].get("task") == ATTACH}
    for address, conv in zip(ADDRESSES, ("conv1", "conv2")):
        assert {attached[server] for server in by_address[address]} == {fleet.instances[conv]}, (address, attached)

    # Nothing temporary is left: no volume, attachment, snapshot, loop device or link, no upload, no lock or slot.
    assert fleet.temporaries() == fleet.baseline
    assert fleet.leftovers() == {}
    for name in ("conv1", "conv2"):
        work = os.path.join(fleet.root, name, "work")
        visible = sorted(entry for entry in os.listdir(work) if not entry.startswith("."))
        assert visible == ["slots"] and not os.listdir(os.path.join(work, "slots")), (name, visible)
