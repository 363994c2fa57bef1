"""The provider contract: the same assertions for every source adapter, each against its own peer (see conftest.PEERS)."""

from __future__ import annotations

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MIB = 1024 * 1024
SNAPSHOT_KEYS = {"name", "id", "volume", "server", "created", "size", "format", "fingerprint"}
VOLUME_KEYS = {"id", "name", "size", "profile", "zone"}
ATTACH_KEYS = {"volume_id", "attachment_id", "device", "host", "snapshot"}


def _data(seed, size=2 * MIB):
    """Bytes a test can tell apart: a pattern per seed, with a hole of zeros in the middle."""
    block = (b"%08d" % seed) * (64 * 1024 // 8)
    body = bytearray(block * (size // len(block)))
    body[size // 4: size // 2] = bytes(size // 4)
    return bytes(body)


def _server(peer, name="web01", seed=1):
    peer.make_server(name, _data(seed))
    return peer.source(**peer.server_params(name)), name


def test_registry_names_every_adapter():
    assert set(_providers.SOURCES) >= {"local"} and set(_providers.TARGETS) >= {"bucket_catalog"}
    with pytest.raises(ReplicationError, match="Failed to use provider nope: unknown provider 'nope'; choose one of"):
        _providers.source({"provider": "nope"})
    with pytest.raises(ReplicationError, match="Failed to use target nope"):
        _providers.target({"target": "nope"})


def test_an_adapter_not_installed_is_a_clear_error_and_adds_no_options(monkeypatch):
    monkeypatch.setitem(_providers.SOURCES, "ghost", "_no_such_adapter")
    with pytest.raises(ReplicationError, match="provider 'ghost' is not installed .*no module_utils/_no_such_adapter.py"):
        _providers.source({"provider": "ghost"})
    assert _providers.provider_options(["ghost", "local"]) == _providers.provider_options(["local"])


def test_server_info_answers_the_same_keys(peer):
    adapter, name = _server(peer)
    server = adapter.server_info(name)
    assert {"name", "id", "zone", "profile", "os", "boot_volume", "volumes", "latest_snapshot"} <= set(server)
    assert server["name"] == name and server["latest_snapshot"] is None
    assert VOLUME_KEYS <= set(server["boot_volume"]) and server["boot_volume"]["size"] == getattr(peer, "boot_volume_size", 2 * MIB)
    assert server["volumes"][0]["id"] == server["boot_volume"]["id"]


def test_unknown_server_fails_naming_it(peer):
    adapter = peer.source(**peer.server_params("ghost01"))
    with pytest.raises(ReplicationError) as info:
        adapter.server_info("ghost01")
    assert info.value.msg.startswith("Failed to find server ghost01") and "ghost01" in info.value.msg


def test_snapshot_create_list_restore_delete(peer):
    adapter, name = _server(peer)
    volume = adapter.server_info(name)["boot_volume"]["id"]
    before = peer.read_volume(name)

    preview, changed = adapter.snapshot_create(volume, server=name, check_mode=True)
    assert changed is True and adapter.snapshot_list(server=name) == []
    snap, changed = adapter.snapshot_create(volume, server=name)
    assert changed is True and SNAPSHOT_KEYS <= set(snap)
    assert snap["server"] == name and snap["created"].endswith("Z") and snap["name"].startswith(name + "-")
    assert preview["name"] == snap["name"] or preview["created"] <= snap["created"]
    listed = adapter.snapshot_list(server=name)
    assert [s["name"] for s in listed] == [snap["name"]] and listed[0]["id"] == snap["id"]
    assert adapter.server_info(name)["latest_snapshot"]["name"] == snap["name"]

    peer.write_volume(name, _data(2))
    assert peer.read_volume(name) != before
    if getattr(peer, "restore_refused", None):  # no volume to roll back (an image-backed server's root disk): a clear refusal
        with pytest.raises(ReplicationError, match=peer.restore_refused):
            adapter.snapshot_restore(snap["name"])
        assert adapter.snapshot_delete(snap["name"])[1] is True and adapter.snapshot_list(server=name) == []
        return
    if getattr(peer, "restore_needs_detached", False):  # Cinder reverts a volume only while it is detached
        with pytest.raises(ReplicationError, match="reverts only a detached volume") as info:
            adapter.snapshot_restore(snap["name"])
        assert "in-use" in info.value.msg and peer.read_volume(name) != before
        peer.detach(name)
    assert adapter.snapshot_restore(snap["name"], check_mode=True)[1] is True and peer.read_volume(name) != before
    restored, changed = adapter.snapshot_restore(snap["name"])
    assert changed is True and restored["name"] == snap["name"]
    if getattr(peer, "restore_makes_new_volume", False):  # the provider cannot roll back: a new volume holds the snapshot
        assert peer.read_restored(restored) == before and peer.read_volume(name) != before
    else:
        assert peer.read_volume(name) == before
    assert adapter.snapshot_restore(snap["name"])[1] is False

    assert adapter.snapshot_delete(snap["name"], check_mode=True)[1] is True
    assert len(adapter.snapshot_list(server=name)) == 1
    gone, changed = adapter.snapshot_delete(snap["name"])
    assert changed is True and gone["name"] == snap["name"] and adapter.snapshot_list(server=name) == []
    assert adapter.snapshot_delete(snap["name"]) == (None, False)


def test_attach_gives_a_device_with_the_snapshot_bytes(peer):
    adapter, name = _server(peer)
    volume = adapter.server_info(name)["boot_volume"]["id"]
    snap, _unused = adapter.snapshot_create(volume, server=name)
    peer.write_volume(name, _data(3))  # the device holds the snapshot's bytes, not the volume's of now

    attachment, _unused = adapter.volume_attach(snap["name"], peer.host)
    try:
        assert ATTACH_KEYS <= set(attachment) and attachment["snapshot"] == snap["name"]
        assert peer.read_device(attachment["device"], 2 * MIB) == _data(1)
        again, changed = adapter.volume_attach(snap["name"], peer.host)
        assert changed is False and again["device"] == attachment["device"]
    finally:
        detached, _unused = adapter.volume_detach(attachment)
    assert detached["device"] is None
    assert adapter.volume_detach(attachment)[1] is False
    # a detach with only the snapshot and host (a run that failed before it had an attachment) finds nothing left either
    assert adapter.volume_detach({"snapshot": snap["name"], "host": peer.host})[1] is False
    adapter.snapshot_delete(snap["name"])


def test_attach_of_an_unknown_snapshot_fails_naming_it(peer):
    adapter, _unused = _server(peer)
    with pytest.raises(ReplicationError) as info:
        adapter.volume_attach("web01-19990101-000000", peer.host)
    assert "web01-19990101-000000" in info.value.msg and info.value.msg.startswith("Failed to ")


def test_delete_refuses_what_the_collection_did_not_make(peer):
    adapter, name = _server(peer)
    foreign = peer.foreign_snapshot(name)
    with pytest.raises(ReplicationError) as info:
        adapter.snapshot_delete(foreign)
    assert foreign in info.value.msg and "not made by" in info.value.msg
    assert foreign not in [s["name"] for s in adapter.snapshot_list(server=name)]


def test_fingerprint_follows_the_volume_when_the_provider_has_one(peer):
    adapter, name = _server(peer)
    volume = adapter.server_info(name)["boot_volume"]["id"]
    first = adapter.volume_fingerprint(volume)
    snap, _unused = adapter.snapshot_create(volume, server=name)
    if first is None:
        pytest.skip("provider %s cannot fingerprint a volume" % peer.provider)
    assert snap["fingerprint"] == first == adapter.volume_fingerprint(volume)
    peer.write_volume(name, _data(4))
    assert adapter.volume_fingerprint(volume) != first
