# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The VPC emulator subprocess driven by the real ibm-vpc SDK (VpcV1 + IAMAuthenticator): lifecycles,
pagination, cross-region snapshot copy, real block devices on attach, errors, token expiry, retries."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from requests.exceptions import RetryError
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_cloud_sdk_core.utils import get_query_param
from ibm_vpc.vpc_v1 import Snapshot, SnapshotsPager, Volume, VolumeAttachment, VpcV1

from tests.emulators.fixtures import API_KEY, vpc_emulator_factory  # noqa: F401  # pylint: disable=unused-import
from tests.emulators.vpc_control import REPO, start
from tests.emulators.vpc_storage import COPY_SLOWER

DELAY = 0.3  # the emulator's in-region delay of slow states


def _client(emu, region="us-south", key=API_KEY):
    client = VpcV1(authenticator=IAMAuthenticator(key, url=emu.iam_url))
    client.set_service_url(emu.service_url(region))
    return client


def _wait(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in %ss" % timeout
        time.sleep(0.05)


def _error(call, *args, **kwargs):
    with pytest.raises(ApiException) as err:
        call(*args, **kwargs)
    body = err.value.http_response.json()
    assert set(body) == {"errors", "trace", "status_code"} and body["status_code"] == err.value.status_code
    return err.value.status_code, body["errors"][0]["code"]


@pytest.fixture
def emu(vpc_emulator_factory):  # noqa: F811  # pylint: disable=redefined-outer-name
    return vpc_emulator_factory(delay=DELAY)


def test_subprocess_keeps_the_key_off_argv_and_refuses_to_start_without_one(emu, tmp_path):
    with open("/proc/%d/cmdline" % emu.process.pid, "rb") as handle:
        assert API_KEY.encode() not in handle.read()
    assert _client(emu).list_regions().get_result()["regions"][0]["name"] == "us-south"
    env = {k: v for k, v in os.environ.items() if k != "VPC_EMULATOR_API_KEY"}
    failed = subprocess.run([sys.executable, "-m", "tests.emulators.vpc_server", "--data-dir", str(tmp_path)], capture_output=True,
                            text=True, check=False, env=env, cwd=REPO, timeout=60)
    assert failed.returncode == 2 and "--api-key-file" in failed.stderr and "VPC_EMULATOR_API_KEY" in failed.stderr
    failed = subprocess.run([sys.executable, "-m", "tests.emulators.vpc_server", "--data-dir", str(tmp_path / "missing")],
                            capture_output=True, text=True, check=False, env=dict(env, VPC_EMULATOR_API_KEY="k"), cwd=REPO, timeout=60)
    assert failed.returncode == 2 and "--data-dir %s is not a directory" % (tmp_path / "missing") in failed.stderr
    with pytest.raises(RuntimeError, match="a fault needs method, path_regex"):
        emu.control("POST", "/faults", {"method": "GET", "path_regex": "(", "status": 500})
    with pytest.raises(RuntimeError, match="unknown settings colour"):
        emu.settings(colour="blue")


def test_snapshot_lifecycle_pagination_and_delete(emu):
    vpc = _client(emu)
    vol = emu.seed_volume("us-south", "boot-1")
    for i in range(5):
        snap = vpc.create_snapshot({"source_volume": {"id": vol["id"]}, "name": "s%d" % i, "user_tags": ["vmimage:x"]}).get_result()
        assert Snapshot.from_dict(snap).lifecycle_state == "pending"
    _wait(lambda: vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "stable")
    pages, token = [], None
    while True:
        page = vpc.list_snapshots(limit=2, start=token, source_volume_id=vol["id"], sort="created_at").get_result()
        pages.append([s["name"] for s in page["snapshots"]])
        if "next" not in page:
            break
        assert get_query_param(page["next"]["href"], "source_volume.id") == vol["id"]  # filters kept on next.href
        token = get_query_param(page["next"]["href"], "start")
    assert pages == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert [s["name"] for s in SnapshotsPager(client=vpc, limit=2, sort="-created_at").get_all()] == ["s4", "s3", "s2", "s1", "s0"]
    assert vpc.list_snapshots(tag="vmimage:x", name="s3").get_result()["total_count"] == 1
    assert _error(vpc.create_snapshot, {"source_volume": {"id": vol["id"]}, "name": "s1"}) == (409, "validation_unique_failed")
    assert vpc.delete_snapshot(snap["id"]).get_status_code() == 204
    assert vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "deleting"
    _wait(lambda: vpc.list_snapshots(name="s4").get_result()["total_count"] == 0)
    assert _error(vpc.get_snapshot, snap["id"]) == (404, "snapshot_not_found")


def test_cross_region_snapshot_copy_by_crn(emu):
    south, europe = _client(emu), _client(emu, "eu-de")
    vol = emu.seed_volume("us-south", "src")
    emu.write_volume(vol["id"], b"replicate-me" * 100)
    snap = south.create_snapshot({"source_volume": {"id": vol["id"]}, "name": "orig"}).get_result()
    assert _error(europe.create_snapshot, {"source_snapshot": {"crn": snap["crn"]}, "name": "copy"})[0] == 409  # not stable yet
    _wait(lambda: south.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "stable")
    asked = time.monotonic()
    copy = europe.create_snapshot({"source_snapshot": {"crn": snap["crn"]}, "name": "copy"}).get_result()
    assert copy["lifecycle_state"] == "pending" and copy["source_snapshot"]["crn"] == snap["crn"]
    assert copy["source_snapshot"]["remote"]["region"]["name"] == "us-south" and ":eu-de:" in copy["crn"]
    assert south.get_snapshot(snap["id"]).get_result()["copies"][0]["crn"] == copy["crn"]
    assert europe.list_snapshots(source_snapshot_id=snap["id"]).get_result()["total_count"] == 1
    assert europe.list_snapshots(source_snapshot_remote_region_name="us-south").get_result()["total_count"] == 1
    _wait(lambda: europe.get_snapshot(copy["id"]).get_result()["lifecycle_state"] == "stable")
    # A copy takes COPY_SLOWER times the in-region delay (a lower bound: a busy machine only makes it later).
    assert time.monotonic() - asked >= DELAY * COPY_SLOWER
    with open(os.path.join(emu.data_path, copy["id"] + ".img"), "rb") as handle:
        assert handle.read(1200) == b"replicate-me" * 100
    europe.delete_snapshot(copy["id"])
    _wait(lambda: south.get_snapshot(snap["id"]).get_result()["copies"] == [])
    assert not os.path.exists(os.path.join(emu.data_path, copy["id"] + ".img"))


def test_volume_lifecycle_filters_etag_and_quota(emu):
    vpc = _client(emu)
    vol = vpc.create_volume({"name": "data-1", "capacity": 20, "profile": {"name": "general-purpose"},
                             "zone": {"name": "us-south-2"}}).get_result()
    assert vol["status"] == "pending"
    _wait(lambda: vpc.get_volume(vol["id"]).get_result()["status"] == "available")
    assert [v["name"] for v in vpc.list_volumes(zone_name="us-south-2").get_result()["volumes"]] == ["data-1"]
    assert vpc.list_volumes(name="data-1", attachment_state="unattached").get_result()["total_count"] == 1
    got = vpc.get_volume(vol["id"])
    etag = got.get_headers()["ETag"]
    assert _error(vpc.update_volume, vol["id"], {"name": "renamed"}, if_match='W/"stale"') == (412, "precondition_failed")
    renamed = vpc.update_volume(vol["id"], {"name": "renamed", "user_tags": ["env:test"]}, if_match=etag).get_result()
    assert Volume.from_dict(renamed).name == "renamed" and renamed["user_tags"] == ["env:test"]
    assert _error(vpc.create_volume, {"capacity": 5, "profile": {"name": "general-purpose"}, "zone": {"name": "us-south-1"}}) \
        == (400, "validation_min_value")
    emu.set_quota("volume", 1)
    assert _error(vpc.create_volume, {"capacity": 10, "profile": {"name": "general-purpose"}, "zone": {"name": "us-south-1"}}) \
        == (400, "over_quota")
    emu.set_quota("volume", None)
    assert vpc.delete_volume(vol["id"]).get_status_code() == 204
    _wait(lambda: vpc.list_volumes().get_result()["total_count"] == 0)


def test_instance_lifecycle_filters_and_actions(emu):
    vpc = _client(emu)
    seed = emu.seed_instance("us-south", "source-vm")
    subnet = vpc.get_subnet(seed["primary_network_interface"]["subnet"]["id"]).get_result()
    boot = vpc.get_volume(seed["boot_volume_attachment"]["volume"]["id"]).get_result()
    snap = vpc.create_snapshot({"source_volume": {"id": boot["id"]}, "name": "boot-snap"}).get_result()
    _wait(lambda: vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "stable")
    made = vpc.create_instance({"name": "restored", "profile": {"name": "cx2-2x4"}, "zone": {"name": "us-south-1"},
                                "vpc": {"id": subnet["vpc"]["id"]}, "primary_network_interface": {"subnet": {"id": subnet["id"]}},
                                "boot_volume_attachment": {"volume": {"source_snapshot": {"id": snap["id"]},
                                                                      "profile": {"name": "general-purpose"}}}}).get_result()
    seen = set()
    _wait(lambda: seen.add(vpc.get_instance(made["id"]).get_result()["status"]) or "running" in seen)
    assert seen <= {"pending", "starting", "running"} and "running" in seen
    assert [i["name"] for i in vpc.list_instances(name="restored").get_result()["instances"]] == ["restored"]
    assert vpc.list_instances(vpc_id=subnet["vpc"]["id"]).get_result()["total_count"] == 2
    vpc.create_instance_action(made["id"], "stop")
    assert vpc.get_instance(made["id"]).get_result()["status"] == "stopping"
    _wait(lambda: vpc.get_instance(made["id"]).get_result()["status"] == "stopped")
    assert vpc.delete_instance(made["id"]).get_status_code() == 204
    assert vpc.get_instance(made["id"]).get_result()["status"] == "deleting"
    _wait(lambda: vpc.list_instances(name="restored").get_result()["total_count"] == 0)
    assert _error(vpc.get_instance, made["id"]) == (404, "instance_not_found")
    assert _error(vpc.get_volume, made["boot_volume_attachment"]["volume"]["id"]) == (404, "volume_not_found")  # deleted with it
    assert boot["operating_system"]["name"] == "ubuntu-22-04-amd64"


def test_attachment_is_a_real_block_device_only_while_attached(emu):
    vpc = _client(emu)
    inst = emu.seed_instance("us-south", "conversion-host")["id"]
    vol = emu.seed_volume("us-south", "boot")
    emu.write_volume(vol["id"], b"disk" * 256)
    snap = vpc.create_snapshot({"source_volume": {"id": vol["id"]}}).get_result()
    emu.write_volume(vol["id"], b"later" * 256)  # the snapshot keeps the bytes of when it was taken
    _wait(lambda: vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "stable")
    att = vpc.create_instance_volume_attachment(inst, {"profile": {"name": "general-purpose"}, "source_snapshot": {"id": snap["id"]}},
                                                delete_volume_on_instance_delete=True).get_result()
    link = os.path.join(emu.by_id_path, "virtio-" + att["id"][:20])
    assert VolumeAttachment.from_dict(att).status == "attaching" and not os.path.lexists(link)
    _wait(lambda: os.path.lexists(link))
    assert vpc.get_instance_volume_attachment(inst, att["id"]).get_result()["status"] == "attached"
    assert os.readlink(link).startswith("/dev/loop")
    with open(link, "rb") as dev:
        assert dev.read(1024) == b"disk" * 256
    new_volume = att["volume"]["id"]
    assert _error(vpc.delete_volume, new_volume) == (409, "volume_in_use")
    assert _error(vpc.create_instance_volume_attachment, inst, {"id": new_volume}) == (409, "volume_in_use")
    assert vpc.delete_instance_volume_attachment(inst, att["id"]).get_status_code() == 204
    assert vpc.get_instance_volume_attachment(inst, att["id"]).get_result()["status"] == "detaching"
    _wait(lambda: not os.path.lexists(link))
    _wait(lambda: vpc.get_volume(new_volume).get_result()["attachment_state"] == "unattached")
    assert emu.state()["loop_devices"] == []


def test_vpc_and_subnet_create_conflicts_and_delete(emu):
    vpc = _client(emu)
    net = vpc.create_vpc(name="dr-vpc").get_result()
    _wait(lambda: vpc.get_vpc(net["id"]).get_result()["status"] == "available")
    sub = vpc.create_subnet({"name": "dr-a", "vpc": {"id": net["id"]}, "zone": {"name": "us-south-1"},
                             "ipv4_cidr_block": "10.240.0.0/24"}).get_result()
    assert sub["total_ipv4_address_count"] == 256 and sub["status"] == "pending"
    assert _error(vpc.create_subnet, {"vpc": {"id": net["id"]}, "zone": {"name": "us-south-1"}, "ipv4_cidr_block": "10.240.0.128/25"}) \
        == (409, "network_conflict")
    auto = vpc.create_subnet({"vpc": {"id": net["id"]}, "zone": {"name": "us-south-1"}, "total_ipv4_address_count": 16}).get_result()
    assert auto["ipv4_cidr_block"] == "10.240.1.0/28"
    assert _error(vpc.create_subnet, {"vpc": {"id": net["id"]}, "zone": {"name": "us-south-1"}})[1] == "validation_required_field"
    assert vpc.list_subnets(vpc_id=net["id"], zone_name="us-south-1").get_result()["total_count"] == 2
    assert _error(vpc.delete_vpc, net["id"]) == (409, "vpc_not_empty")
    for subnet in (sub, auto):
        vpc.delete_subnet(subnet["id"])
    _wait(lambda: vpc.list_subnets(vpc_id=net["id"]).get_result()["total_count"] == 0)
    assert vpc.delete_vpc(net["id"]).get_status_code() == 204
    assert [z["name"] for z in vpc.list_region_zones("eu-de").get_result()["zones"]] == ["eu-de-1", "eu-de-2", "eu-de-3"]


def test_version_generation_and_token_errors(emu):
    token = requests.post(emu.iam_url + "/identity/token", timeout=10,
                          data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": API_KEY}).json()["access_token"]

    def raw(token_value=token, **params):
        answer = requests.get(emu.service_url("us-south") + "/volumes", params=params, timeout=10,
                              headers={"Authorization": "Bearer " + token_value})
        return answer.status_code, answer.json()["errors"][0]["code"] if answer.status_code >= 400 else None
    assert raw(generation=2) == (400, "missing_version")
    assert raw(version="2024-13-40", generation=2) == (400, "invalid_version")
    assert raw(version="2018-12-31", generation=2) == (400, "invalid_version_range")
    assert raw(version="2999-01-01", generation=2) == (400, "invalid_version_range")
    assert raw(version="2024-06-11", generation=1)[0] == 400
    assert raw(version="2024-06-11", generation=2) == (200, None)
    assert raw("not-a-token", version="2024-06-11") == (401, "not_authorized")
    emu.control("POST", "/expire-tokens")
    assert raw(version="2024-06-11") == (401, "not_authorized")
    with pytest.raises(ApiException) as err:
        _client(emu, key="wrong").list_volumes()
    assert "BXNIM0415E" in err.value.http_response.text


def test_sdk_refreshes_an_expiring_token(vpc_emulator_factory):  # noqa: F811  # pylint: disable=redefined-outer-name
    emu = vpc_emulator_factory(token_seconds=1)
    vpc = _client(emu)
    vpc.list_volumes()
    first = vpc.authenticator.token_manager.access_token
    time.sleep(2.1)  # the first token is past exp and its leeway: the emulator refuses it, the SDK must fetch another
    assert requests.get(emu.service_url("us-south") + "/volumes", params={"version": "2024-06-11"}, timeout=10,
                        headers={"Authorization": "Bearer " + first}).status_code == 401
    vpc.list_volumes()
    assert emu.state()["tokens_issued"] == 2 and vpc.authenticator.token_manager.access_token != first
    assert [r[2] for r in emu.control("GET", "/requests")["requests"]] == [200, 401, 200]


def test_injected_faults_and_sdk_retries(emu):
    vpc = _client(emu)
    vpc.enable_retries(max_retries=2, retry_interval=0.1)
    emu.inject("GET", r"/volumes$", 429, count=1, retry_after=1)
    vpc.list_volumes()
    assert [r[2] for r in emu.control("GET", "/requests")["requests"]] == [429, 200]  # the SDK retried the 429
    emu.inject("GET", r"/volumes$", 503, count=5)
    with pytest.raises(RetryError):
        vpc.list_volumes()
    vpc.disable_retries()
    emu.inject("POST", r"/snapshots$", 403, count=1)
    assert _error(vpc.create_snapshot, {"source_volume": {"id": "x"}}) == (403, "forbidden")


def test_lifecycles_made_to_fail(emu):
    vpc = _client(emu)
    vol = emu.seed_volume("us-south", "v")
    emu.fail_next("snapshot")
    emu.fail_next("volume")
    snap = vpc.create_snapshot({"source_volume": {"id": vol["id"]}}).get_result()
    _wait(lambda: vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "failed")
    made = vpc.create_volume({"capacity": 10, "profile": {"name": "general-purpose"}, "zone": {"name": "us-south-1"}}).get_result()
    _wait(lambda: vpc.get_volume(made["id"]).get_result()["status"] == "failed")
    failed = vpc.get_volume(made["id"]).get_result()
    assert failed["status_reasons"][0]["code"] and failed["health_state"] == "faulted"
    seed = emu.seed_instance("us-south", "host")
    snap_ok = vpc.create_snapshot({"source_volume": {"id": vol["id"]}}).get_result()
    _wait(lambda: vpc.get_snapshot(snap_ok["id"]).get_result()["lifecycle_state"] == "stable")
    emu.fail_next("instance")
    made = vpc.create_instance({"profile": {"name": "bx2-2x8"}, "zone": {"name": "us-south-1"},
                                "primary_network_interface": {"subnet": {"id": seed["primary_network_interface"]["subnet"]["id"]}},
                                "boot_volume_attachment": {"volume": {"source_snapshot": {"id": snap_ok["id"]},
                                                                      "profile": {"name": "general-purpose"}}}}).get_result()
    _wait(lambda: vpc.get_instance(made["id"]).get_result()["status"] == "failed")
    assert vpc.get_instance(made["id"]).get_result()["lifecycle_state"] == "failed"
    with pytest.raises(RuntimeError, match="kind must be"):
        emu.fail_next("bogus")


def test_stop_removes_loop_devices_and_links(tmp_path):
    data, by_id = tmp_path / "data", tmp_path / "by-id"
    data.mkdir()
    by_id.mkdir()
    emu = start(API_KEY, data_dir=str(data), by_id_dir=str(by_id), delay=0.05)
    try:
        inst = emu.seed_instance("us-south", "host")["id"]
        vol = emu.seed_volume("us-south", "d")
        emu.write_volume(vol["id"], b"x" * 4096)
        _client(emu).create_instance_volume_attachment(inst, {"id": vol["id"]})
        _wait(lambda: list(by_id.iterdir()))
        loops = emu.state()["loop_devices"]
        assert len(loops) == 1
    finally:
        emu.stop()  # raises when a link or loop device is left
    assert list(by_id.iterdir()) == []
    assert str(data) not in subprocess.run(["losetup", "--list"], capture_output=True, text=True, check=True).stdout
