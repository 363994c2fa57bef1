# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""``molecule test`` of the scenarios in extensions/molecule/ (converge, idempotence, verify) against real sshd hosts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc.vpc_v1 import VpcV1

from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401  # pylint: disable=unused-import
from tests.integration.replication import build_disk, make_site
from tests.peers.runner import COLLECTIONS, ROOT, payload_cache_env

VENV_BIN = os.path.dirname(sys.executable)
SCENARIOS = {
    # scenario: (sshd address, inventory group, host vars under the test's directory)
    "powervc_host": ("127.0.0.5", "powervc", lambda base: {"powervc_host_sessions_dir": os.path.join(base, "sessions"),
                                                           "powervc_host_venv": os.path.join(base, "sessions", "venv")}),
    "conversion_host": ("127.0.0.6", "conversion_hosts", lambda base: {"conversion_host_work_dir": os.path.join(base, "work"),
                                                                       "conversion_host_venv": os.path.join(base, "venv"),
                                                                       "conversion_host_install_packages": False}),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_molecule_scenario(scenario, sshd_factory, tmp_path):
    address, group, host_vars = SCENARIOS[scenario]
    host = sshd_factory(address)
    base = str(tmp_path / "host")
    molecule_test(scenario, {group: {"hosts": {"%s1" % group: dict(host.inventory_vars(), **host_vars(base))}}}, tmp_path)


def test_molecule_replicate_server(s3_rclone, tmp_path):
    """The role with the local provider into a real S3 bucket: converge replicates, the second converge changes nothing."""
    site = make_site(tmp_path, s3_rclone, [build_disk(str(tmp_path / "disk.img"), size="32M", fill=0.4)], ["web01"])
    site.write_cos_file()
    inventory = site.inventory()
    inventory["servers"]["hosts"]["web01"]["ansible_connection"] = "local"
    try:
        output = molecule_test("replicate_server", inventory, tmp_path, ANSIBLE_ASYNC_DIR=site.async_dir)
    finally:
        os.unlink(site.cos_file)
    assert s3_rclone.secret_access_key not in output
    assert len(site.catalog("web01")["images"]) == 1 and site.leftovers() == {}


def test_molecule_recover_servers(vpc_emulator_factory, tmp_path):  # noqa: F811  # pylint: disable=redefined-outer-name
    """The role against the VPC emulator: converge recovers two servers in eu-de, the second converge changes nothing,
    verify finds their instances, cleanup removes exactly what the role made (someone else's instance stays)."""
    emu = vpc_emulator_factory(delay=0.02)
    bystander = emu.seed_instance("eu-de", name="jumphost", zone="eu-de-1")
    servers = [{"name": "web01", "profile": "bx2-2x8", "zone": "us-south-1"}, {"name": "db01", "profile": "bx2-4x16", "zone": "us-south-2"}]
    for server in servers:
        emu.control("POST", "/images", {"region": "eu-de", "name": server["name"] + "-latest"})
    vpc = dict(endpoint=emu.service_url("eu-de"), iam_url=emu.iam_url, max_retries=2, retry_interval=0.05)
    host = dict(ansible_connection="local", ansible_python_interpreter=sys.executable, recover_servers_region="eu-de",
                recover_servers_ibm_vpc=vpc, recover_servers_vpc_name="dr-molecule", recover_servers_servers=servers,
                recover_servers_zone_map={"us-south-2": "eu-de-3"}, recover_servers_wait_timeout=60, recover_servers_wait_sleep=0.05)
    output = molecule_test("recover_servers", {"recover": {"hosts": {"localhost": host}}}, tmp_path, IC_API_KEY=emu.api_key_for_tests)
    assert emu.api_key_for_tests not in output
    dr = VpcV1(authenticator=IAMAuthenticator(emu.api_key_for_tests, url=emu.iam_url))
    dr.set_service_url(emu.service_url("eu-de"))
    assert [i["id"] for i in dr.list_instances().get_result()["instances"]] == [bystander["id"]]
    assert "dr-molecule" not in [v["name"] for v in dr.list_vpcs().get_result()["vpcs"]]


def molecule_test(scenario, groups, tmp_path, **extra_env):
    """``molecule test -s scenario`` over an inventory of ``groups``; its output (asserted to have converged, been idempotent, verified)."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": groups}}))
    env = dict(os.environ, PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
               VMIMAGE_MOLECULE_INVENTORY=str(inventory), XDG_CACHE_HOME=str(tmp_path / "cache"), ANSIBLE_HOME=str(tmp_path / "ansible"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), NO_COLOR="1", ANSIBLE_NOCOLOR="1", **payload_cache_env(), **extra_env)
    done = subprocess.run([os.path.join(VENV_BIN, "molecule"), "test", "-s", scenario], cwd=os.path.join(ROOT, "extensions"), env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    if os.environ.get("VMI_MOLECULE_LOG"):
        with open(os.environ["VMI_MOLECULE_LOG"], "a", encoding="utf-8") as handle:
            handle.write(output)
    assert "idempotence" in output.lower() and "verify" in output.lower()
    return output
