# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""snapshot_copy / snapshot_copy_info / snapshot_restore with provider ibm_vpc against the VPC emulator's cross-region copy
(``POST /snapshots`` in the destination with ``source_snapshot: {crn}``), driven through the real ibm-vpc SDK."""

from __future__ import annotations

import datetime
import filecmp
import json
import os
import time

import kubernetes_validate
import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc import VpcV1

from tests.contract import assert_return_contract
from tests.emulators.fixtures import vpc_emulator_factory  # noqa: F401 pylint: disable=unused-import
from tests.harness import run_module

SRC, DST, DST2 = "us-south", "eu-de", "eu-gb"
CREATED = "created-by:vmimage.replication"
SRC_KEY_CRN = ("crn:v1:bluemix:public:kms:us-south:a/0123456789abcdef0123456789abcdef:11112222-3333-4444-5555-666677778888:key:"
               "0000aaaa-1111-2222-3333-444455556666")
KEY_CRN = "crn:v1:bluemix:public:kms:eu-de:a/0123456789abcdef0123456789abcdef:11112222-3333-4444-5555-666677778888:key:aaaabbbb-cccc-dddd-eeee-ffff00001111"


class Bed:
    def __init__(self, emu):
        self.emu = emu
        self.clients = {}
        self.last_second = 0

    def client(self, region):
        if region not in self.clients:
            client = VpcV1(authenticator=IAMAuthenticator(self.emu.api_key_for_tests, url=self.emu.iam_url))
            client.set_service_url(self.emu.service_url(region))
            self.clients[region] = client
        return self.clients[region]

    def volume(self, name, data=b"\x5a" * (1 << 20), encryption_key=None):
        vol = self.emu.seed_volume(SRC, name, capacity=10, zone=SRC + "-1", encryption_key=encryption_key)
        self.emu.write_volume(vol["id"], data)
        return vol["id"]

    def snapshot(self, volume, name, tags=("backup:nightly",)):
        """A stable snapshot; each in its own second, as the copies' start-time tags (and retention's order) are whole seconds."""
        while int(time.time()) <= self.last_second:
            time.sleep(0.05)
        client = self.client(SRC)
        snap = client.create_snapshot({"source_volume": {"id": volume}, "name": name, "user_tags": list(tags)}).get_result()
        self.last_second = int(time.time())  # after the answer: the snapshot's created_at is not later than this
        while client.get_snapshot(snap["id"]).get_result()["lifecycle_state"] != "stable":
            pass  # the emulator's delay is 0.05 s
        return snap["id"]

    def snapshots(self, region):
        return {s["id"]: s for s in self.client(region).list_snapshots(limit=100).get_result()["snapshots"]}

    def copies(self, region):
        return {i: s for i, s in self.snapshots(region).items() if CREATED in s["user_tags"]}

    def args(self, **extra):
        value = dict(provider="ibm_vpc", region=SRC, destination_regions=[DST], tags={"backup": "nightly"}, retention_count=5,
                     wait_sleep=0.05, wait_timeout=60,
                     ibm_vpc=dict(api_key=self.emu.api_key_for_tests, endpoint=self.emu.url + "/{region}/v1", iam_url=self.emu.iam_url,
                                  max_retries=1, retry_interval=0.05))
        value.update(extra)
        return {k: v for k, v in value.items() if v is not None}  # Ansible counts a key given as None in mutually_exclusive


@pytest.fixture
def bed(vpc_emulator_factory, monkeypatch):  # noqa: F811 pylint: disable=redefined-outer-name
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "IC_API_KEY", "IBMCLOUD_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return Bed(vpc_emulator_factory(delay=0.05, regions=[SRC, DST, DST2]))


def test_first_run_copies_what_is_missing_second_copies_nothing(bed):
    vols = [bed.volume("data-%d" % i, data=bytes([i + 1]) * (1 << 20)) for i in range(3)]
    sources = [bed.snapshot(v, "nightly-%d" % i) for i, v in enumerate(vols)]
    bed.snapshot(vols[0], "weekly-0", tags=("backup:weekly",))
    args = bed.args(destination_regions=[DST, DST2])

    preview = run_module("snapshot_copy", args, check_mode=True)
    assert preview["changed"] is True and len(preview["copied"]) == 6 and not bed.copies(DST), preview
    result = run_module("snapshot_copy", args)
    assert result["changed"] is True and not result.get("failed"), result
    assert sorted(result["source_snapshots"]) == sorted(sources) and len(result["copied"]) == 6
    assert {c["state"] for c in result["copied"]} == {"completed"}
    for region in (DST, DST2):
        copies = bed.copies(region)
        assert len(copies) == 3 and {c["lifecycle_state"] for c in copies.values()} == {"stable"}
        for copy in copies.values():
            tags = dict(t.split(":", 1) for t in copy["user_tags"])
            origin = tags["vmimage.replication.origin-snapshot-id"]
            assert origin in sources and tags["vmimage.replication.origin-region"] == SRC and "backup:nightly" in copy["user_tags"]
            assert copy["source_snapshot"]["crn"].split(":")[5] == SRC
            assert filecmp.cmp(os.path.join(bed.emu.data_path, copy["id"] + ".img"), os.path.join(bed.emu.data_path, origin + ".img"),
                               shallow=False)
    again = run_module("snapshot_copy", args)
    assert again["changed"] is False and again["copied"] == [] and again["deleted"] == [] and len(again["present"]) == 6
    assert bed.emu.api_key_for_tests not in json.dumps(result) + json.dumps(again)


def test_copies_in_flight_stay_within_the_limit_and_the_next_run_finishes(bed):
    vol = bed.volume("data")
    for index in range(3):
        bed.snapshot(vol, "nightly-%d" % index)
    bed.emu.settings(delay=2.0)  # copies stay pending (three times the delay) while the module returns
    started = run_module("snapshot_copy", bed.args(max_concurrent_copies=2, wait=False))
    assert started["changed"] is True and len(started["pending"]) == 3, started
    assert len([p for p in started["pending"] if p["state"] == "pending"]) == 2 and len(bed.copies(DST)) == 2
    bed.emu.settings(delay=0.05)
    finished = run_module("snapshot_copy", bed.args(max_concurrent_copies=2))
    assert finished["changed"] is True and len(finished["copied"]) == 1 and len(finished["present"]) == 2
    assert len(bed.copies(DST)) == 3


def test_retention_keeps_the_newest_and_never_touches_foreign_snapshots(bed):
    vol = bed.volume("data")
    first = [bed.snapshot(vol, "nightly-%d" % i) for i in range(3)]
    result = run_module("snapshot_copy", bed.args(retention_count=2))
    assert len(result["copied"]) == 2 and result["skipped_too_old"] == [first[0]], (first, result)
    # an operator's copy with a similar name, and a snapshot that only claims to be ours without the state tags
    foreign = bed.client(DST).create_snapshot({"source_snapshot": {"crn": bed.snapshots(SRC)[first[0]]["crn"]},
                                               "name": "nightly-0-us-south-manual", "user_tags": ["backup:nightly"]}).get_result()["id"]
    claimed = bed.client(DST).create_snapshot({"source_snapshot": {"crn": bed.snapshots(SRC)[first[1]]["crn"]},
                                               "name": "nightly-1-by-hand", "user_tags": [CREATED]}).get_result()["id"]
    newest = bed.snapshot(vol, "nightly-3")
    result = run_module("snapshot_copy", bed.args(retention_count=2))
    assert result["changed"] is True and [c["origin_snapshot_id"] for c in result["copied"]] == [newest]
    assert [d["origin_snapshot_id"] for d in result["deleted"]] == [first[1]]
    left = bed.snapshots(DST)
    assert foreign in left and claimed in left
    gone = result["deleted"][0]["id"]
    assert gone not in left or left[gone]["lifecycle_state"] == "deleting"
    origins = {dict(t.split(":", 1) for t in s["user_tags"]).get("vmimage.replication.origin-snapshot-id")
               for s in left.values() if s["lifecycle_state"] != "deleting"}
    assert {first[2], newest} <= origins and first[1] not in origins


def test_retention_days_deletes_old_copies_but_keeps_the_newest_of_each_volume(bed):
    vol = bed.volume("data")
    old, new = bed.snapshot(vol, "nightly-old"), bed.snapshot(vol, "nightly-new")
    run_module("snapshot_copy", bed.args(retention_count=None, retention_days=7))
    copy_of_old = next(i for i, s in bed.copies(DST).items() if "vmimage.replication.origin-snapshot-id:" + old in s["user_tags"])
    month_ago = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)).strftime("%Y%m%d-%H%M%S")
    tags = [t if not t.startswith("vmimage.replication.start-time:") else "vmimage.replication.start-time:" + month_ago
            for t in bed.copies(DST)[copy_of_old]["user_tags"]]
    bed.client(DST).update_snapshot(copy_of_old, {"user_tags": tags})
    preview = run_module("snapshot_copy", bed.args(retention_count=None, retention_days=7), check_mode=True)
    assert preview["changed"] is True and [d["id"] for d in preview["deleted"]] == [copy_of_old] and copy_of_old in bed.copies(DST)
    result = run_module("snapshot_copy", bed.args(retention_count=None, retention_days=7))
    assert result["changed"] is True and [d["id"] for d in result["deleted"]] == [copy_of_old] and result["copied"] == []
    assert new in {dict(t.split(":", 1) for t in s["user_tags"])["vmimage.replication.origin-snapshot-id"] for s in bed.copies(DST).values()}


def test_throttled_copies_are_started_again(bed):
    vol = bed.volume("data")
    for index in range(2):
        bed.snapshot(vol, "nightly-%d" % index)
    bed.emu.inject("POST", r"^/%s/v1/snapshots$" % DST, 429, count=3, retry_after=0)
    result = run_module("snapshot_copy", bed.args())
    assert result["changed"] is True and len(result["copied"]) == 2 and len(bed.copies(DST)) == 2, result
    seen = bed.emu.control("GET", "/requests")["requests"]
    assert sum(1 for r in seen if r[0] == "POST" and r[1] == "/%s/v1/snapshots" % DST and r[2] == 429) == 3


def test_a_failed_copy_fails_the_run_and_the_next_run_replaces_it(bed):
    bed.snapshot(bed.volume("data"), "nightly-0")
    bed.emu.control("POST", "/failures", {"kind": "snapshot", "count": 1})
    failed = run_module("snapshot_copy", bed.args())
    assert failed.get("failed") and "Failed to copy 1 snapshot(s)" in failed["msg"] and "nothing was deleted" in failed["msg"], failed
    assert [c["lifecycle_state"] for c in bed.copies(DST).values()] == ["failed"]
    again = run_module("snapshot_copy", bed.args())
    assert again.get("changed") is True and len(again["copied"]) == 1 and len(again["deleted"]) == 1, again
    # The failed copy was deleted (VPC shows it "deleting" for a while before it goes): one stable copy remains.
    assert [c["lifecycle_state"] for c in bed.copies(DST).values() if c["lifecycle_state"] != "deleting"] == ["stable"]


def test_encryption_key_goes_with_the_copies_of_customer_key_snapshots_only(bed):
    """VPC's rule: a copy takes encryption_key if and only if its source is user_managed (a customer root key)."""
    bed.snapshot(bed.volume("data"), "nightly-0")
    bad = run_module("snapshot_copy", bed.args(encryption_key="alias/dr"))
    assert bad.get("failed") and "encryption_key alias/dr is not the CRN of a Key Protect" in bad["msg"] and not bed.copies(DST)
    bed.snapshot(bed.volume("secret", encryption_key=SRC_KEY_CRN), "nightly-1")
    missing = run_module("snapshot_copy", bed.args())
    assert missing.get("failed") and "nightly-1 are encrypted with a customer root key" in missing["msg"] and "set encryption_key" in missing["msg"]
    assert "nightly-0" not in missing["msg"] and not bed.copies(DST)  # said before anything was copied
    result = run_module("snapshot_copy", bed.args(encryption_key=KEY_CRN))
    assert result["changed"] is True and len(result["copied"]) == 2, result
    by_origin = {s["name"].rsplit("-", 2)[0]: s for s in bed.copies(DST).values()}
    assert by_origin["nightly-1"]["encryption"] == "user_managed" and by_origin["nightly-1"]["encryption_key"]["crn"] == KEY_CRN
    assert by_origin["nightly-0"]["encryption"] == "provider_managed" and "encryption_key" not in by_origin["nightly-0"]


def test_bad_input_is_a_clear_error_and_an_empty_selection_is_not(bed):
    bed.snapshot(bed.volume("data"), "nightly-0")
    unknown = run_module("snapshot_copy", bed.args(destination_regions=["mars-1"]))
    assert unknown.get("failed") and "unknown region mars-1; choose one of eu-de, eu-gb, us-south" in unknown["msg"]
    zero = run_module("snapshot_copy", bed.args(retention_count=0))
    assert zero.get("failed") and "would delete every copy" in zero["msg"]
    same = run_module("snapshot_copy", bed.args(destination_regions=[SRC]))
    assert same.get("failed") and "lists the source region us-south" in same["msg"]
    velero = run_module("snapshot_copy", bed.args(tags=None, velero={"bucket": "b", "schedule": "daily"}))
    assert velero.get("failed") and "velero is for provider aws" in velero["msg"]
    nothing = run_module("snapshot_copy", bed.args(tags={"backup": "hourly"}))
    assert nothing["changed"] is False and nothing["msg"].startswith("nothing to copy") and not bed.copies(DST)
    wrong = run_module("snapshot_copy", bed.args(ibm_vpc=dict(bed.args()["ibm_vpc"], api_key="wrongKey-Q9z8")))
    assert wrong.get("failed") and "check ibm_vpc.api_key" in wrong["msg"] and "wrongKey-Q9z8" not in json.dumps(wrong)


def test_volume_ids_select_and_copy_info_lists_the_copies(bed):
    keep, other = bed.volume("keep"), bed.volume("other")
    wanted = bed.snapshot(keep, "keep-0", tags=())
    bed.snapshot(other, "other-0", tags=())
    result = run_module("snapshot_copy", bed.args(tags=None, volume_ids=[keep]))
    assert result.get("source_snapshots") == [wanted], result
    assert result["source_snapshots"] == [wanted] and len(result["copied"]) == 1
    info = run_module("snapshot_copy_info", dict(provider="ibm_vpc", region=DST, ibm_vpc=bed.args()["ibm_vpc"]))
    assert info["changed"] is False and len(info["snapshots"]) == 1, info
    record = info["snapshots"][0]
    assert record["origin_snapshot_id"] == wanted and record["origin_region"] == SRC and record["volume_id"] == keep
    assert record["state"] == "completed" and record["zone"] == SRC + "-1" and record["start_time"].endswith("Z")
    assert run_module("snapshot_copy_info", dict(provider="ibm_vpc", region=DST, origin_region=DST2,
                                                 ibm_vpc=bed.args()["ibm_vpc"]))["snapshots"] == []


def test_restore_a_copy_to_a_new_volume_in_a_chosen_zone(bed):
    source = bed.snapshot(bed.volume("data", data=b"\x33" * (1 << 20)), "nightly-0")
    run_module("snapshot_copy", bed.args())
    copy_id = next(iter(bed.copies(DST)))
    vpc = bed.args()["ibm_vpc"]
    args = dict(provider="ibm_vpc", region=DST, snapshot_id=copy_id, availability_zone=DST + "-2", ibm_vpc=vpc, wait_sleep=0.05, wait_timeout=60)

    preview = run_module("snapshot_restore", args, check_mode=True)
    assert preview["changed"] is True and preview["volume_id"] is None, preview
    made = run_module("snapshot_restore", args)
    assert made["changed"] is True and made["created"] is True and made["persistent_volume"] is None, made
    volume = bed.client(DST).get_volume(made["volume_id"]).get_result()
    assert volume["zone"]["name"] == DST + "-2" and volume["status"] == "available" and volume["source_snapshot"]["id"] == copy_id
    assert filecmp.cmp(os.path.join(bed.emu.data_path, made["volume_id"] + ".img"), os.path.join(bed.emu.data_path, source + ".img"),
                       shallow=False)
    again = run_module("snapshot_restore", args)
    assert again["changed"] is False and again["volume_id"] == made["volume_id"]

    # Naming the claim proposes the objects for IBM's VPC Block CSI driver, valid for Kubernetes.
    claimed = run_module("snapshot_restore", dict(args, pvc_name="data-db-0", pvc_namespace="shop"))
    assert claimed["changed"] is False and claimed["volume_id"] == made["volume_id"], claimed
    pv, pvc = claimed["persistent_volume"], claimed["persistent_volume_claim"]
    kubernetes_validate.validate(pv, "1.30", strict=True)
    kubernetes_validate.validate(pvc, "1.30", strict=True)
    assert pv["spec"]["csi"] == {"driver": "vpc.block.csi.ibm.io", "volumeHandle": made["volume_id"], "fsType": "ext4",
                                 "volumeAttributes": {"volumeId": made["volume_id"], "zone": DST + "-2", "region": DST}}, pv
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert {term["key"]: term["values"] for term in terms} == {"topology.kubernetes.io/zone": [DST + "-2"], "topology.kubernetes.io/region": [DST]}
    assert pv["spec"]["capacity"]["storage"] == "%dGi" % volume["capacity"] and pv["spec"]["claimRef"] == {"namespace": "shop", "name": "data-db-0"}
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"] == "restored-%s" % made["volume_id"]
    assert_return_contract("snapshot_restore", claimed)

    # back into the source region: the copy is copied back first, once
    home = run_module("snapshot_restore", dict(args, region=SRC, snapshot_region=DST, availability_zone=SRC + "-3"))
    assert home["changed"] is True and home["copied_back"] and home["volume_id"] and home["region"] == SRC, home
    assert run_module("snapshot_restore", dict(args, region=SRC, snapshot_region=DST, availability_zone=SRC + "-3"))["changed"] is False

    bad_zone = run_module("snapshot_restore", dict(args, availability_zone="us-south-1"))
    assert bad_zone.get("failed") and "it is not a zone of eu-de; choose one of eu-de-1, eu-de-2, eu-de-3" in bad_zone["msg"], bad_zone
    missing = run_module("snapshot_restore", dict(args, snapshot_id="no-such-snapshot"))
    assert missing.get("failed") and "no snapshot no-such-snapshot in region eu-de" in missing["msg"]
