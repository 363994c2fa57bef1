"""playbooks/replicate.yml with the local provider (a disk file) and target openstack: the role replicates into real Glance.

Keystone + Glance are the session peer of the OpenStack tests (tests/peers/openstack.py, RegionTwo); the image goes through
the real data path into rclone's S3 server, then is streamed into Glance, whose os_hash_value is checked here too.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.integration.replication import build_disk, change_disk, changed_count, make_site, qemu_compare, summary
# The OpenStack tests' session peer and RegionTwo's Glance, emptied before and after each test.
from tests.integration.test_openstack_glance import glance, openstack_cloud  # noqa: F401 pylint: disable=unused-import

pytestmark = pytest.mark.xdist_group("openstack")  # one worker starts the peer once (--dist loadgroup)

SERVER = "app01"


def _images(conn):
    return {image.name: image for image in conn.image.images()}


def _sha512_of_object(site, key, path):
    site.download(key, path)
    return _sha512_of_file(path)


def _sha512_of_file(path):
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_replicate_a_disk_into_glance_and_rotate_latest(tmp_path, s3_rclone, openstack_cloud, glance, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", openstack_cloud.clouds_yaml)  # the modules find the cloud "peer" through it
    disk = build_disk(str(tmp_path / "template.img"), size="32M", fill=0.4)
    site = make_site(tmp_path / "site", s3_rclone, [disk], [SERVER],
                     extra=dict(replication_target="openstack",
                                replication_target_options={"openstack": {"cloud": "peer", "region_name": "RegionTwo", "timeout": 120}}))

    run = site.run(replication_keep_objects=True)  # the object stays: its bytes are compared with Glance's hash below
    assert run.status == "successful", run.stdout
    first = summary(run)[SERVER]
    assert first["status"] == "replicated" and first["latest"] == first["image"] and first["previous_latest"] is None, first
    images = _images(glance)
    assert sorted(images) == ["%s-latest" % SERVER]
    latest = images["%s-latest" % SERVER]
    assert latest.status == "active" and latest.disk_format == "qcow2"
    assert latest.hash_algo == "sha512" and latest.hash_value == _sha512_of_object(site, first["key"], str(tmp_path / "1.qcow2"))
    assert site.leftovers().keys() <= {"orphans"}  # the bucket catalog's orphan check does not apply to Glance's images
    assert site.multipart_uploads() == []

    # Unchanged: the local provider fingerprints the disk, so nothing is done at all.
    again = site.run()
    assert again.status == "successful", again.stdout
    assert summary(again)[SERVER]["status"] == "unchanged" and changed_count(again) == 0, again.stdout
    assert {name: image.id for name, image in _images(glance).items()} == {name: image.id for name, image in images.items()}

    # A changed disk: a new latest, the previous one renamed by its snapshot time and kept.
    change_disk(site.disks[SERVER])
    run = site.run()
    assert run.status == "successful", run.stdout
    second = summary(run)[SERVER]
    assert second["status"] == "replicated" and second["previous_latest"] == first["image"], second
    images = _images(glance)
    assert sorted(images) == sorted(["%s-latest" % SERVER, first["image"]])
    assert images[first["image"]].id == latest.id
    new = images["%s-latest" % SERVER]
    assert new.id != latest.id and new.status == "active"
    # By default the object goes once Glance holds the image; what Glance holds is the changed disk, and its hash is right.
    objects = site.objects()
    assert second["key"] not in objects and first["key"] in objects
    downloaded = str(tmp_path / "2.qcow2")
    glance.image.download_image(new, output=downloaded)
    compared = qemu_compare(site.disks[SERVER], downloaded)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert new.hash_value == _sha512_of_file(downloaded)
    assert site.multipart_uploads() == []
