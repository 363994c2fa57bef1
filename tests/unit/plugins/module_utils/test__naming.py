"""Names, times and retention: plain tables, no Ansible."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 3, 10, 0, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-03-10T12:00:00Z", "2026-03-10T12:00:00Z"),
        ("2026-03-10T12:00:00.987654Z", "2026-03-10T12:00:00Z"),
        ("2026-03-10T14:00:00+02:00", "2026-03-10T12:00:00Z"),
        ("2026-03-10T07:00:00-05:00", "2026-03-10T12:00:00Z"),
        ("20260310-120000", "2026-03-10T12:00:00Z"),
        (datetime.datetime(2026, 3, 10, 13, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))), "2026-03-10T12:00:00Z"),
    ],
)
def test_times_are_utc(value, expected):
    assert _naming.format_time(value) == expected
    assert _naming.parse_time(value).tzinfo == UTC


@pytest.mark.parametrize("value", ["2026-03-10T12:00:00", datetime.datetime(2026, 3, 10, 12, 0), "yesterday", "", 1700000000, None])
def test_times_without_zone_or_garbage_are_rejected(value):
    with pytest.raises(ValueError):
        _naming.parse_time(value)


@pytest.mark.parametrize(
    "server, time, name, key",
    [
        ("web01", "2026-03-10T12:00:05Z", "web01-20260310-120005", "images/web01/web01-20260310-120005.qcow2"),
        ("db-primary-2", "2026-12-31T23:59:59Z", "db-primary-2-20261231-235959", "images/db-primary-2/db-primary-2-20261231-235959.qcow2"),
        ("app.example.com", "2027-01-01T00:00:00+01:00", "app.example.com-20261231-230000",
         "images/app.example.com/app.example.com-20261231-230000.qcow2"),
        ("a_b", "20260101-000000", "a_b-20260101-000000", "images/a_b/a_b-20260101-000000.qcow2"),
    ],
)
def test_names_and_keys(server, time, name, key):
    assert _naming.image_name(server, time) == name
    assert _naming.object_key("images/", server, time, "qcow2") == key
    assert _naming.object_key("images", server, time, "qcow2") == key
    assert _naming.object_key("/images/", server, time, "qcow2") == key
    assert _naming.latest_name(server) == server + "-latest"


def test_empty_prefix():
    assert _naming.object_key("", "s", "20260101-000000", "raw") == "s/s-20260101-000000.raw"


@pytest.mark.parametrize("server", ["", "a/b", "with space", "-lead", "../up", None, "x" * 201])
def test_bad_server_names_are_rejected(server):
    with pytest.raises(ValueError, match="server name"):
        _naming.image_name(server, NOW)
    with pytest.raises(ValueError):
        _naming.latest_name(server)


def test_bad_format_is_rejected():
    with pytest.raises(ValueError, match="format"):
        _naming.object_key("p/", "s", NOW, "../x")


def _img(day, name=None, **extra):
    time = "2026-03-%02dT00:00:00Z" % day
    image = dict(name=name or "s-202603%02d-000000" % day, snapshot_time=time)
    image.update(extra)
    return image


def _names(images):
    return [i["name"] for i in images]


# (days of the images, keep_last, keep_days, latest day, days pruned)
PRUNE_TABLE = [
    ([1, 2, 3, 4], 7, None, 4, []),
    ([1, 2, 3, 4], 2, None, 4, [1, 2]),
    ([4, 2, 1, 3], 2, None, 4, [1, 2]),  # input order does not matter
    ([1, 2, 3, 4], 1, None, 4, [1, 2, 3]),
    ([1, 2, 3, 4], 1, None, 2, [1, 3]),  # the latest is never pruned, even when it is not the newest
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], 2, 5, 9, [1, 2, 3, 4]),  # day 5 is exactly 5 days old on day 10: kept
    ([1, 2, 3, 4, 5, 6, 7, 8, 9], 7, 5, 9, [1, 2]),  # outside keep_last AND older than keep_days
    ([1, 2, 3], 1, 30, 3, []),  # all younger than keep_days
    ([1, 2, 3], 1, 0, 3, [1, 2]),
]


@pytest.mark.parametrize("days, keep_last, keep_days, latest, pruned", PRUNE_TABLE)
def test_select_prune_table(days, keep_last, keep_days, latest, pruned):
    images = [_img(d) for d in days]
    got = _naming.select_prune(images, keep_last, keep_days, NOW, latest="s-202603%02d-000000" % latest)
    assert _names(got) == ["s-202603%02d-000000" % d for d in pruned]


def test_select_prune_latest_flag_and_foreign_images():
    images = [_img(1, latest=True), _img(2, created_by="someone-else"), _img(3, created_by=_naming.CREATED_BY), _img(4)]
    assert _names(_naming.select_prune(images, 1)) == ["s-20260303-000000"]


def test_select_prune_ties_are_broken_by_name():
    images = [_img(5, name="s-b"), _img(5, name="s-a"), _img(5, name="s-c")]
    assert _names(_naming.select_prune(images, 1)) == ["s-a", "s-b"]
    assert _names(_naming.select_prune(list(reversed(images)), 1)) == ["s-a", "s-b"]


@pytest.mark.parametrize("keep_last", [0, -1, True, 1.5, None])
def test_select_prune_rejects_bad_keep_last(keep_last):
    with pytest.raises(ValueError, match="keep_last"):
        _naming.select_prune([_img(1)], keep_last)


def test_select_prune_keep_days_needs_aware_now():
    with pytest.raises(ValueError, match="now"):
        _naming.select_prune([_img(1)], 1, keep_days=3)
    with pytest.raises(ValueError, match="time zone"):
        _naming.select_prune([_img(1), _img(2)], 1, keep_days=3, now=datetime.datetime(2026, 3, 10))
    with pytest.raises(ValueError, match="keep_days"):
        _naming.select_prune([_img(1)], 1, keep_days=-1, now=NOW)
