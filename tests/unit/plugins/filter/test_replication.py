"""The replicate_server role's decisions, as filters: unchanged, data path, snapshot ownership, resume, result record."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vmimage.replication.plugins.filter import replication as f

FP = "536870912:1773144000000000000:1234567"
LATEST = {"name": "web01-20260310-120000", "key": "images/web01/web01-20260310-120000.qcow2", "sha256": "ab" * 32, "size": 123,
          "source_fingerprint": FP}


def server(fingerprint=FP):
    return {"name": "web01", "boot_volume": {"id": "/v/web01.img", "fingerprint": fingerprint}}


@pytest.mark.parametrize("srv, latest, force, expected", [
    (server(), LATEST, False, True),
    (server(), LATEST, "yes", False),                       # forced
    (server(), None, False, False),                         # no image yet
    (server("other"), LATEST, False, False),                # the volume changed
    (server(None), dict(LATEST, source_fingerprint=None), False, False),  # no fingerprint: always copy
    ({}, LATEST, False, False),
])
def test_server_unchanged(srv, latest, force, expected):
    assert f.server_unchanged(srv, latest, force=force) is expected


@pytest.mark.parametrize("uploaded, latest, force, expected", [
    ({"guest_sha256": "AB12"}, {"guest_sha256": "ab12"}, False, True),
    ({"guest_sha256": "ab12"}, {"guest_sha256": "ab13"}, False, False),
    ({"guest_sha256": "ab12"}, {"guest_sha256": "ab12"}, True, False),
    ({"guest_sha256": None}, {"guest_sha256": None}, False, False),  # the staged path records no digest
    ({}, {"guest_sha256": "ab12"}, False, False),
    ({"guest_sha256": "ab12"}, {"source_fingerprint": "fp"}, False, False),  # an image made before digests were recorded
    ({"guest_sha256": "ab12"}, None, False, False),
])
def test_server_unchanged_after_the_copy_compares_guest_digests(uploaded, latest, force, expected):
    # A provider without fingerprints (VPC): once the volume was read, the digests tell.
    assert f.server_unchanged(server(None), latest, force=force, uploaded=uploaded) is expected


def test_a_volume_with_a_new_fingerprint_is_imported_even_with_the_same_content():
    # Else the latest image would keep the old fingerprint, and every later run would read the volume again.
    latest = {"guest_sha256": "ab12", "source_fingerprint": "old"}
    assert f.server_unchanged(server("new"), latest, uploaded={"guest_sha256": "ab12"}) is False


def test_server_unchanged_refuses_a_non_boolean_force():
    with pytest.raises(AnsibleFilterError, match="force must be a boolean"):
        f.server_unchanged(server(), LATEST, force="maybe")


@pytest.mark.parametrize("requested, compress, fmt, expected", [
    ("auto", True, "raw", "stream"), ("auto", "True", None, "stream"), ("auto", False, "raw", "staged"), ("auto", True, "qcow2", "staged"),
    ("stream", False, "qcow2", "stream"), ("staged", True, "raw", "staged"),
])
def test_data_path(requested, compress, fmt, expected):
    assert f.data_path(requested, compress, fmt) == expected


def test_data_path_names_the_option_when_unknown():
    with pytest.raises(AnsibleFilterError, match="replication_data_path is 'fast'"):
        f.data_path("fast")


def test_snapshot_owned():
    snap = {"changed": False, "snapshot": {"name": "web01-20260310-120000"}}
    assert f.snapshot_owned(dict(snap, changed=True)) is True
    assert f.snapshot_owned(snap, mark=None, image_name="web01-20260310-120000") is False  # someone else's snapshot of the same state
    assert f.snapshot_owned(snap, mark="web01-20260310-120000\n", image_name="web01-20260310-120000") is True  # kept by a run to resume
    assert f.snapshot_owned(snap, mark="web01-20260301-000000", image_name="web01-20260310-120000") is False
    assert f.snapshot_owned({}, mark="x", image_name="x") is False


@pytest.mark.parametrize("keep, check, started, uploaded, expected", [
    (True, False, True, False, True), (False, False, True, False, False), (True, True, True, False, False),
    (True, False, False, False, False), (True, False, True, True, False), ("true", "false", "true", "false", True),
])
def test_keep_for_resume(keep, check, started, uploaded, expected):
    assert f.keep_for_resume(keep, check_mode=check, started=started, uploaded=uploaded) is expected


def test_every_record_has_the_same_keys():
    records = [
        f.replication_result("unchanged", catalog={"latest": LATEST}),
        f.replication_result("replicated", imported={"image": {"name": "i"}}, converted={}, uploaded={}, key="k"),
        f.replication_result("would-replicate", imported={"image": {"name": "i"}, "latest": "i"}),
        f.replication_result("failed", catalog=None, key=None, error="boom"),
    ]
    for record in records:
        assert tuple(record) == f.RESULT_KEYS and isinstance(record["pruned"], list)


def test_unchanged_record_is_the_latest_image():
    record = f.replication_result("unchanged", catalog={"latest": LATEST})
    assert record == dict(dict.fromkeys(f.RESULT_KEYS), status="unchanged", image=LATEST["name"], latest=LATEST["name"], pruned=[],
                          stored_size=123, seconds=0, key=LATEST["key"], sha256=LATEST["sha256"])


def test_unchanged_after_a_read_keeps_what_the_read_cost():
    converted = {"virtual_size": 1000, "stored_size": 400, "seconds": 1.5}
    uploaded = {"seconds": 0.5, "bytes_per_second": 800, "uploaded_bytes": 400}
    record = f.replication_result("unchanged", catalog={"latest": LATEST}, converted=converted, uploaded=uploaded, key="k2")
    assert record["image"] == LATEST["name"] and record["key"] == LATEST["key"] and record["stored_size"] == 123
    assert record["seconds"] == 2.0 and record["uploaded_bytes"] == 400 and record["virtual_size"] == 1000


def test_replicated_record_takes_names_and_sums_the_stages():
    imported = {"image": {"name": "web01-20260311-120000"}, "latest": {"name": "web01-20260311-120000"},
                "previous_latest": {"name": LATEST["name"]}, "pruned": ["web01-20260301-120000"]}
    converted = {"virtual_size": 1000, "stored_size": 400, "compression_ratio": 0.4, "seconds": 1.5, "sha256": "cd" * 32}
    uploaded = {"seconds": 0.5, "bytes_per_second": 800, "uploaded_bytes": 400, "resumed_parts": 0}
    record = f.replication_result("replicated", imported=imported, converted=converted, uploaded=uploaded, key="k1")
    assert record["image"] == record["latest"] == "web01-20260311-120000" and record["previous_latest"] == LATEST["name"]
    assert record["pruned"] == ["web01-20260301-120000"] and record["seconds"] == 2.0 and record["sha256"] == "cd" * 32
    assert record["uploaded_bytes"] == 400 and record["resumed_parts"] == 0 and record["key"] == "k1" and record["error"] is None
    # check mode: the import plan gives names, nothing was uploaded
    plan = {"image": "web01-20260311-120000", "latest": "web01-20260311-120000", "previous_latest": None, "pruned": []}
    record = f.replication_result("would-replicate", imported=plan, converted={"virtual_size": 1000}, image="web01-20260311-120000")
    assert record["image"] == "web01-20260311-120000" and record["previous_latest"] is None and record["seconds"] == 0.0


def test_native_copy_record_names_the_snapshot_and_the_copies():
    old = {"id": "r134-old", "region": "eu-de", "state": "completed", "start_time": "2026-03-10T01:00:00Z"}
    older = dict(old, id="r134-older", start_time="2026-03-09T01:00:00Z")
    made = {"id": "r134-new", "region": "eu-de", "state": "completed", "start_time": "2026-03-11T01:00:00Z"}
    copied = {"present": [older, old], "copied": [made], "deleted": [{"id": "r134-older"}]}
    record = f.replication_result("replicated", copied=copied, image="web01-20260311-010000")
    assert tuple(record) == f.RESULT_KEYS
    assert record["image"] == "web01-20260311-010000" and record["latest"] == "r134-new" and record["previous_latest"] == "r134-old"
    assert record["pruned"] == ["r134-older"] and record["key"] is None and record["error"] is None
    # check mode: the would-be copy has no id yet; the newest copy there is still the latest
    planned = {"present": [old], "copied": [dict(made, id=None)], "deleted": []}
    record = f.replication_result("would-replicate", copied=planned, image="web01-20260311-010000")
    assert record["latest"] is None and record["previous_latest"] == "r134-old" and record["pruned"] == []


def test_failed_record_keeps_the_latest_name_and_the_error():
    record = f.replication_result("failed", catalog={"latest": LATEST}, key="k2", error="Failed to upload: AccessDenied")
    assert record["status"] == "failed" and record["latest"] == LATEST["name"] and record["image"] is None
    assert record["key"] == "k2" and record["error"] == "Failed to upload: AccessDenied"
    assert f.replication_result("failed", error="x")["latest"] is None
    with pytest.raises(AnsibleFilterError, match="status 'done'"):
        f.replication_result("done")


def test_conversion_host_for_deals_servers_round_robin():
    servers = ["s%d" % i for i in range(8)]
    placed = [f.conversion_host_for(["conv-a", "conv-b"], name, servers) for name in servers]
    assert placed == ["conv-a", "conv-b"] * 4
    assert f.conversion_host_for(["only"], "s3", servers) == "only"


@pytest.mark.parametrize("pool, message", [([], "non-empty list"), ("conv-a", "non-empty list"), (["a", "a"], "names a host twice")])
def test_conversion_host_for_names_a_bad_pool(pool, message):
    with pytest.raises(AnsibleFilterError, match=message):
        f.conversion_host_for(pool, "s0", ["s0"])


def test_conversion_host_for_refuses_a_server_outside_the_play():
    with pytest.raises(AnsibleFilterError, match="not among the servers"):
        f.conversion_host_for(["a"], "ghost", ["s0"])
