# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Drift test: every kind of answer the VPC emulator gives goes through the ibm-vpc SDK's model classes.

``Model.from_dict`` fails on a missing required field; ``unknown_keys`` fails on a field the SDK does not
know (a misspelt or invented name), at any depth. The emulator runs in this process (no loop devices).
"""

from __future__ import annotations

import time

import pytest
import requests
from ibm_vpc import vpc_v1 as models

from tests.emulators.vpc_server import VpcEmulator

KEY = "drift-test-key"
VERSION = "2024-06-11"


def unknown_keys(sent, parsed, path="$"):
    """Paths of keys in ``sent`` that the SDK model dropped when it parsed them (``parsed`` is its to_dict())."""
    found = []
    if isinstance(sent, dict) and isinstance(parsed, dict):
        for key, value in sent.items():
            if key not in parsed:
                found.append("%s.%s" % (path, key))
            else:
                found += unknown_keys(value, parsed[key], "%s.%s" % (path, key))
    elif isinstance(sent, list) and isinstance(parsed, list):
        for index, (one, other) in enumerate(zip(sent, parsed)):
            found += unknown_keys(one, other, "%s[%d]" % (path, index))
    return found


def test_unknown_keys_names_dropped_fields_at_any_depth():
    assert unknown_keys({"a": 1, "b": {"c": [{"d": 1, "e": 2}]}}, {"a": 1, "b": {"c": [{"d": 1}]}}) == ["$.b.c[0].e"]
    assert unknown_keys({"a": 1}, {"a": 1}) == []


@pytest.fixture(scope="module")
def emu():
    server = VpcEmulator(KEY, delay=0.05).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def call(emu):
    token = requests.post(emu.iam_url + "/identity/token", timeout=10,
                          data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": KEY}).json()["access_token"]

    def do(method, path, body=None, region="us-south", expect=None, **params):
        answer = requests.request(method, emu.service_url(region) + path, json=body, timeout=10,
                                  params=dict(params, version=VERSION, generation=2), headers={"Authorization": "Bearer " + token})
        if expect is not None:
            assert answer.status_code == expect, answer.text
        return answer.json() if answer.content else None
    return do


def check(model, payload):
    parsed = model.from_dict(payload)
    assert unknown_keys(payload, parsed.to_dict()) == [], "%s does not know these fields: %s" % (model.__name__, unknown_keys(payload, parsed.to_dict()))
    return payload


def _settle(emu):
    time.sleep(0.2)


def test_every_answer_parses_with_the_sdk_models(emu, call):
    check(models.RegionCollection, call("GET", "/regions", expect=200))
    check(models.Region, call("GET", "/regions/us-south", expect=200))
    check(models.ZoneCollection, call("GET", "/regions/us-south/zones", expect=200))
    check(models.Zone, call("GET", "/regions/us-south/zones/us-south-2", expect=200))
    check(models.InstanceProfileCollection, call("GET", "/instance/profiles", expect=200))
    check(models.InstanceProfile, call("GET", "/instance/profiles/bx2-2x8", expect=200))
    check(models.VolumeProfileCollection, call("GET", "/volume/profiles", expect=200))
    check(models.VolumeProfile, call("GET", "/volume/profiles/general-purpose", expect=200))

    vpc = check(models.VPC, call("POST", "/vpcs", {"name": "drift-vpc"}, expect=201))
    assert vpc["status"] == "pending"
    subnet = check(models.Subnet, call("POST", "/subnets", {"name": "drift-subnet", "vpc": {"id": vpc["id"]},
                                                            "zone": {"name": "us-south-1"}, "total_ipv4_address_count": 64},
                                       expect=201))
    _settle(emu)
    check(models.VPC, call("GET", "/vpcs/" + vpc["id"], expect=200))
    check(models.VPCCollection, call("GET", "/vpcs", expect=200))
    check(models.SubnetCollection, call("GET", "/subnets", expect=200))

    volume = check(models.Volume, call("POST", "/volumes", {"name": "drift-vol", "capacity": 20, "profile": {"name": "general-purpose"},
                                                            "zone": {"name": "us-south-1"}, "user_tags": ["t:1"]}, expect=201))
    assert volume["status"] == "pending"
    _settle(emu)
    check(models.VolumeCollection, call("GET", "/volumes", expect=200))

    snapshot = check(models.Snapshot, call("POST", "/snapshots", {"name": "drift-snap", "source_volume": {"id": volume["id"]}}, expect=201))
    _settle(emu)
    stable = check(models.Snapshot, call("GET", "/snapshots/" + snapshot["id"], expect=200))
    assert stable["lifecycle_state"] == "stable"
    copy = check(models.Snapshot, call("POST", "/snapshots", {"name": "drift-copy", "source_snapshot": {"crn": stable["crn"]}},
                                       region="eu-de", expect=201))
    assert copy["source_snapshot"]["remote"]["region"]["name"] == "us-south"
    check(models.SnapshotCollection, call("GET", "/snapshots", region="eu-de", expect=200))
    copied_from = check(models.Snapshot, call("GET", "/snapshots/" + stable["id"], expect=200))
    assert copied_from["copies"][0]["id"] == copy["id"]

    instance = check(models.Instance, call("POST", "/instances", {
        "name": "drift-vm", "profile": {"name": "bx2-2x8"}, "zone": {"name": "us-south-1"}, "vpc": {"id": vpc["id"]},
        "primary_network_interface": {"subnet": {"id": subnet["id"]}},
        "boot_volume_attachment": {"volume": {"source_snapshot": {"id": stable["id"]}, "profile": {"name": "general-purpose"}}}},
        expect=201))
    assert instance["status"] == "pending"
    _settle(emu)
    check(models.Instance, call("GET", "/instances/" + instance["id"], expect=200))
    check(models.InstanceCollection, call("GET", "/instances", expect=200))
    check(models.InstanceAction, call("POST", "/instances/%s/actions" % instance["id"], {"type": "stop"}, expect=201))

    attachment = check(models.VolumeAttachment, call("POST", "/instances/%s/volume_attachments" % instance["id"],
                                                     {"volume": {"id": volume["id"]}, "name": "drift-att"}, expect=201))
    assert attachment["status"] == "attaching"
    _settle(emu)
    check(models.VolumeAttachment, call("GET", "/instances/%s/volume_attachments/%s" % (instance["id"], attachment["id"]), expect=200))
    check(models.VolumeAttachmentCollection, call("GET", "/instances/%s/volume_attachments" % instance["id"], expect=200))
    attached_vm = check(models.Instance, call("POST", "/instances", {
        "name": "drift-vm-2", "profile": {"name": "bx2-2x8"}, "zone": {"name": "us-south-1"},
        "primary_network_attachment": {"virtual_network_interface": {"subnet": {"id": subnet["id"]}}},
        "boot_volume_attachment": {"volume": {"source_snapshot": {"id": stable["id"]}, "profile": {"name": "general-purpose"}}}},
        expect=201))
    assert attached_vm["primary_network_attachment"]["subnet"]["id"] == subnet["id"]
    seeded = emu.seed_instance("us-south", "drift-seeded", operating_system_name="rhel-9-amd64")
    boot = check(models.Volume, call("GET", "/volumes/" + seeded["boot_volume_attachment"]["volume"]["id"], expect=200))
    assert boot["operating_system"]["name"] == "rhel-9-amd64"
    attached = check(models.Volume, call("GET", "/volumes/" + volume["id"], expect=200))
    assert attached["attachment_state"] == "attached" and attached["volume_attachments"][0]["id"] == attachment["id"]


def test_error_answers_have_ibm_error_shape(call):
    answer = call("GET", "/volumes/r006-nope", expect=404)
    assert set(answer) == {"errors", "trace", "status_code"}
    assert set(answer["errors"][0]) >= {"code", "message", "more_info"} and answer["status_code"] == 404
