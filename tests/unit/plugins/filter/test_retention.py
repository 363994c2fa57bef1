"""The import_plan filter: the rotation and retention image_import applies, for an image not uploaded yet."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.vmimage.replication.plugins.filter.retention import import_plan


def catalog(*times, latest=-1):
    images = [{"name": "web01-%s" % t.replace("-", "").replace(":", "").replace("T", "-")[:15], "snapshot_time": t} for t in times]
    return {"images": images, "latest": images[latest] if images else None}


def test_an_empty_catalog_gets_its_first_latest():
    assert import_plan({"images": [], "latest": None}, "web01", "2025-01-01T12:00:00Z") == {
        "image": "web01-20250101-120000", "latest": "web01-20250101-120000", "previous_latest": None, "pruned": []}


def test_a_newer_image_rotates_and_the_oldest_past_keep_last_goes():
    plan = import_plan(catalog("2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z"), "web01", "2025-01-04T00:00:00Z",
                       keep_last=3)
    assert plan == {"image": "web01-20250104-000000", "latest": "web01-20250104-000000", "previous_latest": "web01-20250103-000000",
                    "pruned": ["web01-20250101-000000"]}


def test_an_older_image_does_not_move_the_latest_and_may_be_pruned_itself_never():
    plan = import_plan(catalog("2025-01-02T00:00:00Z", "2025-01-03T00:00:00Z"), "web01", "2025-01-01T00:00:00Z", keep_last=1)
    assert plan["latest"] == "web01-20250103-000000" and plan["previous_latest"] is None
    assert plan["pruned"] == ["web01-20250102-000000"]


def test_keep_days_keeps_young_images():
    plan = import_plan(catalog("2000-01-01T00:00:00Z", "2099-01-01T00:00:00Z"), "web01", "2099-01-02T00:00:00Z", keep_last=1, keep_days=3650)
    assert plan["pruned"] == ["web01-20000101-000000"]


@pytest.mark.parametrize("bad, message", [
    (dict(snapshot_time="yesterday"), "import_plan: "),
    (dict(keep_last=0), "keep_last must be a whole number of at least 1"),
])
def test_bad_input_names_what_to_fix(bad, message):
    args = dict(server="web01", snapshot_time="2025-01-01T00:00:00Z", keep_last=7)
    args.update(bad)
    with pytest.raises(AnsibleFilterError, match=message):
        import_plan(catalog("2024-12-31T00:00:00Z"), **args)
