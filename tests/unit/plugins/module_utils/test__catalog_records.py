"""The image record and result shape every cloud image-catalog target shares (_catalog.target_image_record / target_import_result)."""

from __future__ import annotations

import pytest
from ibm_botocore.exceptions import ClientError

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _powervs
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def _entry(name, status="active", **more):
    return dict({"name": name, "id": "id-" + name, "key": None, "format": "ova", "size": 1, "sha256": None, "snapshot_time": "2026-03-01T10:00:00Z",
                 "source_fingerprint": None, "status": status, "storage_type": "tier1", "created": "x", "internal": "never returned"}, **more)


def test_record_has_the_shared_fields_and_only_the_extra_ones_asked_for():
    entry = _entry("web-20260301-100000")
    assert set(_catalog.target_image_record(entry)) == set(_catalog.TARGET_IMAGE_FIELDS)
    assert set(_catalog.target_image_record(entry, _powervs.EXTRA_FIELDS)) == set(_catalog.TARGET_IMAGE_FIELDS) | {"storage_type", "created"}
    assert _catalog.target_image_record(None) is None


def test_result_names_latest_previous_pruned_and_orphans_by_usable_state():
    new, old, broken = _entry("web-2"), _entry("web-1"), _entry("web-3", status="failed")
    manifest = {"latest": "web-2", "images": [old, new]}
    result = _catalog.target_import_result(manifest, [old, new, broken], new, old, [old], True, [{"name": "x"}], ("active",), _powervs.EXTRA_FIELDS)
    assert result["latest"]["name"] == "web-2" and result["previous_latest"]["name"] == "web-1" and result["pruned"] == ["web-1"]
    assert [o["name"] for o in result["orphans"]] == ["web-3"] and result["orphaned"] == [{"name": "x"}] and result["changed"]
    assert "internal" not in result["image"] and [i["name"] for i in result["images"]] == ["web-1", "web-2"]
    empty = _catalog.target_import_result({"latest": None, "images": []}, [], None, None, [], False)
    assert empty["image"] == {} and empty["latest"] is None and empty["orphans"] == [] and not empty["changed"]
    # The bucket catalog's own result keeps its shape (no orphans key) through the same core.
    assert "orphans" not in _catalog._result({"latest": None, "images": []}, None, None, [], False)  # pylint: disable=protected-access


def test_powervs_target_without_option_powervs_names_what_to_set():
    with pytest.raises(ReplicationError) as err:
        _powervs.Target({"server": "web01", "powervs": None})
    assert "option powervs is not set" in err.value.msg and "web01" in err.value.msg and "api_key" in err.value.msg


def test_delete_target_images_skips_gone_ones_and_reports_the_rest():
    def delete_one(entry):
        if entry["name"] == "gone":
            raise ReplicationError("Failed to delete image gone: HTTP 404", code=404)
        if entry["name"] == "stuck":
            raise ReplicationError("Failed to delete image stuck: HTTP 500", code=500)
        deleted.append(entry["name"])

    deleted = []
    entries = [_entry("ok"), _entry("gone"), _entry("stuck")]
    orphaned = _catalog.delete_target_images(entries, delete_one)
    assert deleted == ["ok"] and orphaned == [{"name": "stuck", "id": "id-stuck", "key": None, "msg": "Failed to delete image stuck: HTTP 500"}]
    with pytest.raises(ReplicationError, match="stuck"):
        _catalog.delete_target_images(entries, delete_one, strict=True)


def test_a_digest_that_cannot_be_read_fails_naming_the_object_and_never_the_secret():
    class Refusing:
        def head_object(self, Bucket, Key):  # noqa: N803 - the SDK's names
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "HeadObject")
    cos = {"endpoint": "https://s3.example", "access_key_id": "AKIAEXAMPLE0000", "secret_access_key": "catalogSecret-0123456789"}
    catalog = _catalog.Catalog(Refusing(), cos, "dr-images", "images/", "web01")
    with pytest.raises(ReplicationError) as caught:
        catalog.guest_digest("images/web01/web01-20260301-120000.qcow2")
    message = str(caught.value)
    assert "verify the guest digest of image" in message and "images/web01/web01-20260301-120000.qcow2" in message, message
    assert "AccessDenied" in message and "catalogSecret-0123456789" not in message
