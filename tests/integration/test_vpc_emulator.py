# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The VPC emulator driven by the real ibm-vpc SDK (VpcV1 + IAMAuthenticator), responses checked by the SDK's models."""

import time

import pytest
from requests.exceptions import RetryError
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_cloud_sdk_core.utils import get_query_param
from ibm_vpc.vpc_v1 import Snapshot, SnapshotCollection, Volume, VolumeCollection, VpcV1

from tests.emulators.vpc_server import start

KEY = "emulator-test-key"


@pytest.fixture
def emu():
    server = start(KEY, delay=0.2)
    yield server
    server.stop()


def _client(emu, region="us-south", key=KEY):
    client = VpcV1(authenticator=IAMAuthenticator(key, url=emu.iam_url))
    client.set_service_url(emu.service_url(region))
    return client


def test_snapshot_lifecycle_models_and_pagination(emu):
    vpc = _client(emu)
    vol = emu.seed_volume("us-south", "boot-1")
    Volume.from_dict(vpc.get_volume(vol["id"]).get_result())
    VolumeCollection.from_dict(vpc.list_volumes().get_result())
    for i in range(5):
        snap = vpc.create_snapshot({"source_volume": {"id": vol["id"]}, "name": "s%d" % i, "user_tags": ["vmimage:x"]}).get_result()
        Snapshot.from_dict(snap)
        assert snap["lifecycle_state"] == "pending"
    time.sleep(0.3)
    assert vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "stable"
    pages, start_token = [], None
    while True:
        page = vpc.list_snapshots(limit=2, start=start_token, source_volume_id=vol["id"], sort="created_at").get_result()
        SnapshotCollection.from_dict(page)
        pages.append([s["name"] for s in page["snapshots"]])
        if "next" not in page:
            break
        start_token = get_query_param(page["next"]["href"], "start")
    assert pages == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert vpc.list_snapshots(tag="vmimage:x", name="s3").get_result()["total_count"] == 1
    with pytest.raises(ApiException) as err:
        vpc.create_snapshot({"source_volume": {"id": vol["id"]}, "name": "s1"})
    assert err.value.status_code == 409
    vpc.delete_snapshot(snap["id"])
    assert vpc.get_snapshot(snap["id"]).get_result()["lifecycle_state"] == "deleting"
    time.sleep(0.3)
    with pytest.raises(ApiException) as err:
        vpc.get_snapshot(snap["id"])
    assert err.value.status_code == 404 and err.value.http_response.json()["errors"][0]["code"] == "snapshot_not_found"


def test_region_isolation_and_version_required(emu):
    vol = emu.seed_volume("us-south", "v")
    with pytest.raises(ApiException) as err:
        _client(emu, "eu-de").get_volume(vol["id"])
    assert err.value.status_code == 404
    vpc = _client(emu)
    vpc.version = None
    with pytest.raises(Exception):
        vpc.list_volumes()


def test_wrong_key_and_token_refresh(emu):
    with pytest.raises(ApiException) as err:
        _client(emu, key="wrong").list_volumes()
    assert "BXNIM0415E" in str(err.value.http_response.text)
    emu.token_seconds = 2
    vpc = _client(emu)
    vpc.list_volumes()
    time.sleep(2.5)
    vpc.list_volumes()
    assert emu.tokens_issued >= 2


def test_429_retry_after_honoured(emu):
    vpc = _client(emu)
    vpc.enable_retries(max_retries=2, retry_interval=0.1)
    emu.inject("GET", r"/volumes$", 429, count=1, retry_after=1)
    started = time.monotonic()
    vpc.list_volumes()
    assert time.monotonic() - started >= 0.9
    emu.inject("GET", r"/volumes$", 503, count=5)
    with pytest.raises(RetryError):  # the SDK's retries spent on 503
        vpc.list_volumes()


def _wait(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in %ss" % timeout
        time.sleep(0.05)


def _disk_emulator(tmp_path):
    data, by_id = tmp_path / "data", tmp_path / "by-id"
    data.mkdir()
    by_id.mkdir()
    return start(KEY, delay=0.0, data_dir=str(data), by_id_dir=str(by_id)), data, by_id


def test_snapshot_copies_bytes_and_attachment_is_a_real_block_device(tmp_path):
    server, data, by_id = _disk_emulator(tmp_path)
    try:
        vol = server.seed_volume("us-south", "boot")
        server.write_volume(vol["id"], b"before" * 100)
        snap = _client(server).create_snapshot({"source_volume": {"id": vol["id"]}}).get_result()
        server.write_volume(vol["id"], b"after!" * 100)
        inst = server.seed_instance("us-south", "inst-1")
        copy = server.seed_volume("us-south", "from-snap")
        import shutil
        shutil.copyfile(str(data / (snap["id"] + ".img")), str(data / (copy["id"] + ".img")))
        att = server.attach("us-south", inst["id"], copy["id"])
        link = by_id / ("virtio-" + att["id"][:20])
        with open(str(link), "rb") as dev:
            assert dev.read(600) == b"before" * 100
        server.detach(att["id"])
        assert not link.exists()
        att = server.attach("us-south", inst["id"], copy["id"])
    finally:
        server.stop()
    assert list(by_id.iterdir()) == []


def test_attach_volume_from_snapshot_over_the_api(tmp_path):
    from ibm_vpc.vpc_v1 import VolumeAttachment
    server, data, by_id = _disk_emulator(tmp_path)
    try:
        vpc = _client(server)
        inst = server.seed_instance("us-south", "inst-1")["id"]
        vol = server.seed_volume("us-south", "boot")
        server.write_volume(vol["id"], b"disk" * 256)
        snap = vpc.create_snapshot({"source_volume": {"id": vol["id"]}}).get_result()
        att = vpc.create_instance_volume_attachment(inst, {"profile": {"name": "general-purpose"}, "source_snapshot": {"id": snap["id"]}},
                                                    delete_volume_on_instance_delete=True).get_result()
        VolumeAttachment.from_dict(att)
        VolumeAttachment.from_dict(vpc.get_instance_volume_attachment(inst, att["id"]).get_result())
        _wait(lambda: (by_id / ("virtio-" + att["id"][:20])).exists())
        with open(str(by_id / ("virtio-" + att["id"][:20])), "rb") as dev:
            assert dev.read(1024) == b"disk" * 256
        vpc.delete_instance_volume_attachment(inst, att["id"])
        _wait(lambda: list(by_id.iterdir()) == [])
    finally:
        server.stop()
