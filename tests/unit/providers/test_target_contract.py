"""The image library contract: the same assertions for every target adapter (see conftest.TARGET_PEERS)."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _digest, _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

SERVER = "web01"
T1, T2, T3 = "2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z", "2026-03-03T12:00:00Z"
IMAGE_KEYS = {"name", "key", "sha256", "snapshot_time", "size", "format", "source_fingerprint", "guest_sha256"}
RESULT_KEYS = {"changed", "image", "latest", "previous_latest", "pruned", "images", "orphaned"}


@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    """Three small real qcow2 images."""
    out = []
    for i in range(3):
        path = tmp_path_factory.mktemp("q") / ("i%d.qcow2" % i)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "%dM" % (8 + i)], check=True)
        out.append(path.read_bytes())
    return out


def test_import_rotates_prunes_and_is_idempotent(target_peer, bodies):
    target = target_peer.target(server=SERVER)
    assert target.info()["images"] == [] and target.info()["latest"] is None
    key1 = target_peer.upload(SERVER, T1, bodies[0])

    preview = target.import_image(key1, snapshot_time=T1, keep_last=2, check_mode=True)
    assert preview["changed"] is True and RESULT_KEYS <= set(preview) and target.info()["latest"] is None
    first = target.import_image(key1, snapshot_time=T1, keep_last=2)
    assert first["changed"] is True and IMAGE_KEYS <= set(first["image"])
    assert first["latest"]["name"] == _naming.image_name(SERVER, T1) and first["previous_latest"] is None
    assert target.import_image(key1, snapshot_time=T1, keep_last=2)["changed"] is False

    key2 = target_peer.upload(SERVER, T2, bodies[1])
    second = target.import_image(key2, snapshot_time=T2, keep_last=2)
    assert second["latest"]["name"] == _naming.image_name(SERVER, T2) and second["previous_latest"]["name"] == _naming.image_name(SERVER, T1)
    key3 = target_peer.upload(SERVER, T3, bodies[2])
    third = target.import_image(key3, snapshot_time=T3, keep_last=2)
    assert third["pruned"] == [_naming.image_name(SERVER, T1)]
    assert [i["name"] for i in target.info()["images"]] == [_naming.image_name(SERVER, t) for t in (T2, T3)]


def test_latest_is_removed_only_with_force(target_peer, bodies):
    target = target_peer.target(server=SERVER)
    for when, body in ((T1, bodies[0]), (T2, bodies[1])):
        target.import_image(target_peer.upload(SERVER, when, body), snapshot_time=when)
    with pytest.raises(ReplicationError, match="force"):
        target.remove_image(_naming.latest_name(SERVER))
    gone = target.remove_image(_naming.image_name(SERVER, T1))
    assert gone["changed"] is True and [i["name"] for i in gone["images"]] == [_naming.image_name(SERVER, T2)]
    assert target.remove_image(_naming.image_name(SERVER, T1))["changed"] is False
    forced = target.remove_image(_naming.latest_name(SERVER), force=True)
    assert forced["changed"] is True and target.info()["latest"] is None


def test_failed_import_leaves_the_latest(target_peer, bodies):
    target = target_peer.target(server=SERVER)
    target.import_image(target_peer.upload(SERVER, T1, bodies[0]), snapshot_time=T1)
    key2 = target_peer.upload(SERVER, T2, bodies[1])
    target_peer.break_object(key2)
    with pytest.raises(ReplicationError) as info:
        target.import_image(key2, snapshot_time=T2)
    assert info.value.msg.startswith("Failed to import image") and key2 in info.value.msg
    missing = "images/%s/%s.qcow2" % (SERVER, _naming.image_name(SERVER, T3))
    with pytest.raises(ReplicationError) as info:
        target.import_image(missing, snapshot_time=T3)
    assert missing in info.value.msg
    assert target.info()["latest"]["name"] == _naming.image_name(SERVER, T1)


def test_import_checks_the_guest_digest_and_records_it(target_peer, bodies, tmp_path):
    """Every importer recomputes the digest image_upload recorded before the image service sees the object, and keeps it
    with the image: how a re-run of a provider without volume fingerprints (VPC) tells that nothing changed."""
    if type(target_peer).__name__ == "PowerVSPeer":
        pytest.skip("PowerVS imports OVA exports, on which nothing records a guest digest")
    path = tmp_path / "second.qcow2"
    path.write_bytes(bodies[1])
    digest = _digest.digest_qcow2(_digest.file_reader(str(path)))
    target = target_peer.target(server=SERVER)
    # The first body under the second one's digest: an object that changed after its upload.
    changed = target_peer.upload(SERVER, T1, bodies[0], **{_digest.METADATA_KEY: digest})
    with pytest.raises(ReplicationError, match="guest content digest is [0-9a-f]+ but %s was expected" % digest) as caught:
        target.import_image(changed, snapshot_time=T1)
    assert changed in str(caught.value) and target.info()["images"] == []
    good = target_peer.upload(SERVER, T2, bodies[1], **{_digest.METADATA_KEY: digest})
    assert target.import_image(good, snapshot_time=T2)["image"]["guest_sha256"] == digest
    assert target.info()["latest"]["guest_sha256"] == digest


# The VPC target keeps the latest's digest in a record of its own; the others store it with the image.
@pytest.mark.parametrize("target_peer", ["ibm_vpc"], indirect=True)
def test_a_vpc_latest_imported_before_digests_gets_its_digest_on_the_next_import(target_peer, bodies, tmp_path):
    path = tmp_path / "image.qcow2"
    path.write_bytes(bodies[1])
    digest = _digest.digest_qcow2(_digest.file_reader(str(path)))
    target = target_peer.target(server=SERVER)
    key = target_peer.upload(SERVER, T1, bodies[1])  # as image_upload wrote objects before it recorded digests
    target.import_image(key, snapshot_time=T1)
    assert target.info()["latest"]["guest_sha256"] is None
    assert target_peer.upload(SERVER, T1, bodies[1], **{_digest.METADATA_KEY: digest}) == key  # the same bytes, now with a digest
    again = target.import_image(key, snapshot_time=T1)
    assert again["changed"] is False and again["image"]["guest_sha256"] == digest
    assert target.info()["latest"]["guest_sha256"] == digest
