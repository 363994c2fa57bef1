# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/recover.yml (module vpc_recover) through ansible-runner against the VPC emulator subprocess: the DR region
gets a VPC, a subnet per zone and one instance per server from its <server>-latest image; a re-run changes nothing;
state absent removes exactly what it made."""

from __future__ import annotations

import os

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._ibm_vpc_recover import target_zone
from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import
from tests.peers import runner

SOURCE, DR = "us-south", "eu-de"
SERVERS = {"web01": ("us-south-1", "bx2-2x8"), "db01": ("us-south-2", "bx2-4x16")}
PLAYBOOK = os.path.join(runner.ROOT, "playbooks", "recover.yml")


class Site:
    def __init__(self, emu, tmp_path):
        self.emu, self.tmp_path, self.runs = emu, tmp_path, 0
        for name, (zone, profile) in SERVERS.items():
            emu.seed_instance(SOURCE, name=name, zone=zone, profile=profile)
        # Someone else's instance (with its own VPC) in the DR region: recovery must never touch it.
        self.bystander = emu.seed_instance(DR, name="jumphost", zone="eu-de-1")

    def seed_images(self, names=tuple(SERVERS)):
        for name in names:
            self.emu.control("POST", "/images", {"region": DR, "name": name + "-latest"})

    def vpc(self, region):
        return dict(region=region, endpoint=self.emu.service_url(region), iam_url=self.emu.iam_url, max_retries=2, retry_interval=0.05,
                    wait_sleep=0.2)

    def dr(self):
        return _providers.source({"provider": "ibm_vpc", "ibm_vpc": dict(self.vpc(DR), api_key=self.emu.api_key_for_tests),
                                  "wait_timeout": 20, "wait_sleep": 0.05})

    def run(self, check=False, **extra):
        self.runs += 1
        private = self.tmp_path / ("run-%d" % self.runs)
        private.mkdir()
        group = {"hosts": {n: {"ansible_connection": "local"} for n in SERVERS},
                 "vars": dict({"replication_provider": "ibm_vpc", "replication_provider_options": {"ibm_vpc": self.vpc(SOURCE)},
                               "replication_recover_region": DR, "replication_recover_options": {"ibm_vpc": self.vpc(DR)},
                               "replication_recover_vpc_name": "dr-vpc", "replication_recover_zone_map": {"us-south-2": "eu-de-3"},
                               "replication_recover_wait_timeout": 60, "replication_recover_wait_sleep": 0.05}, **extra)}
        inventory = {"all": {"hosts": {"localhost": {"ansible_connection": "local"}}, "children": {"servers": group}}}
        return runner.run_playbook(PLAYBOOK, inventory, envvars={"IC_API_KEY": self.emu.api_key_for_tests},
                                   cmdline="--check" if check else None, private_dir=str(private))

    def snapshot_of_dr(self):
        dr = self.dr()
        return {"vpcs": sorted(v["name"] for v in dr.pages("list", "list_vpcs", "vpcs")),
                "subnets": sorted(s["name"] for s in dr.pages("list", "list_subnets", "subnets")),
                "instances": {i["name"]: (i["zone"]["name"], i["profile"]["name"], i["vpc"]["name"])
                              for i in dr.pages("list", "list_instances", "instances")}}


def recorded(run):
    return run.custom_stats()["vmimage_recover"]


@pytest.fixture
def site(vpc_emulator_factory, tmp_path):  # noqa: F811 pylint: disable=redefined-outer-name
    return Site(vpc_emulator_factory(delay=0.02), tmp_path)


def test_recover_makes_vpc_subnets_instances_once_and_absent_removes_only_them(site):
    site.seed_images()
    before = site.snapshot_of_dr()
    check = site.run(check=True)
    assert check.status == "successful", check.stdout
    assert recorded(check)["vpc"] == "dr-vpc" and sorted(recorded(check)["instances"]) == ["db01", "web01"]
    assert site.snapshot_of_dr() == before

    first = site.run()
    assert first.status == "successful", first.stdout
    assert recorded(first)["subnets"] == ["dr-vpc-eu-de-1", "dr-vpc-eu-de-3"]
    after = site.snapshot_of_dr()
    assert after["instances"]["web01"] == ("eu-de-1", "bx2-2x8", "dr-vpc")
    assert after["instances"]["db01"] == ("eu-de-3", "bx2-4x16", "dr-vpc")
    assert "jumphost" in after["instances"] and "dr-vpc" in after["vpcs"]
    for run in (first, check):
        assert site.emu.api_key_for_tests not in run.stdout and site.emu.api_key_for_tests not in str(run.events)

    again = site.run()
    assert again.status == "successful", again.stdout
    assert recorded(again) == {"state": "present", "vpc": None, "subnets": [], "instances": [], "kept": []}
    assert site.snapshot_of_dr() == after

    gone = site.run(replication_recover_state="absent")
    assert gone.status == "successful", gone.stdout
    assert sorted(recorded(gone)["instances"]) == ["db01", "web01"] and recorded(gone)["vpc"] == "dr-vpc"
    assert site.snapshot_of_dr() == before
    assert site.run(replication_recover_state="absent").status == "successful"


def test_absent_keeps_an_instance_it_did_not_make_and_its_vpc(site):
    site.seed_images()
    assert site.run().status == "successful"
    vpc_id = next(v["id"] for v in site.dr().pages("list", "list_vpcs", "vpcs") if v["name"] == "dr-vpc")
    subnet = next(s["id"] for s in site.dr().pages("list", "list_subnets", "subnets") if s["name"] == "dr-vpc-eu-de-1")
    site.emu.seed_instance(DR, name="by-hand", zone="eu-de-1", vpc_id=vpc_id, subnet_id=subnet)
    gone = site.run(replication_recover_state="absent")
    assert gone.status == "successful", gone.stdout
    assert sorted(recorded(gone)["instances"]) == ["db01", "web01"] and recorded(gone)["vpc"] is None
    assert "instance by-hand" in recorded(gone)["kept"] and "subnet dr-vpc-eu-de-1" in recorded(gone)["kept"]
    left = site.snapshot_of_dr()
    assert set(left["instances"]) == {"jumphost", "by-hand"} and "dr-vpc" in left["vpcs"] and left["subnets"].count("dr-vpc-eu-de-1") == 1


def test_a_missing_image_fails_clearly_and_makes_nothing(site):
    site.seed_images(["web01"])
    before = site.snapshot_of_dr()
    run = site.run()
    assert run.status == "failed"
    assert "Failed to recover server db01: no available image db01-latest in region eu-de; replicate the server first" in run.stdout
    assert site.snapshot_of_dr() == before


def test_recovery_from_snapshot_copies_fails_clearly_without_one_and_makes_nothing(site):
    """With replication_mode snapshot_copy the instances boot from snapshot copies: the images alone do not count."""
    site.seed_images()
    before = site.snapshot_of_dr()
    run = site.run(replication_mode="snapshot_copy")
    assert run.status == "failed"
    assert "no stable snapshot copy of it in region eu-de; replicate it with replication_mode snapshot_copy first" in run.stdout, run.stdout
    assert site.snapshot_of_dr() == before


def test_zone_mapping_uses_the_map_then_the_zone_number_and_names_an_unmappable_zone():
    assert target_zone("us-south-2", {"us-south-2": "eu-de-3"}, "eu-de") == "eu-de-3"
    assert target_zone("us-south-1", {}, "eu-de") == "eu-de-1"
    with pytest.raises(ReplicationError, match="Failed to map zone 'odd' to region eu-de: give it in zone_map"):
        target_zone("odd", {}, "eu-de")
