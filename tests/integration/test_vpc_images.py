# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target ibm_vpc against the VPC emulator subprocess: the real ibm-vpc SDK, real qemu-img, the real S3 server (rclone).

The emulator's image answers are fed through the SDK's models; the adapter imports ``cos://<region>/<bucket>/<key>`` into
eu-de, rotates ``<server>-latest``, prunes, and fails cleanly (the previous latest intact, nothing left) on a broken or
missing object, an unauthorised bucket, an operating system the region lacks and a full quota.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid

import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_cloud_sdk_core.utils import get_query_param
from ibm_vpc.vpc_v1 import Image, ImageCollection, OperatingSystem, OperatingSystemCollection, VpcV1

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from tests.emulators.vpc_control import start

API_KEY = "vpcImagesKey-Qw8Zr2Lm6NtX4Vb9Hs1"
REGION = "eu-de"
T1, T2, T3 = "2026-03-01T12:00:00Z", "2026-03-02T12:00:00Z", "2026-03-03T12:00:00Z"


def _gone(client, image_id):
    try:
        client.get_image(image_id)
    except ApiException as exc:
        return exc.status_code == 404
    return False


def _settled(predicate, bound=30.0):
    """Poll ``predicate`` until true (VPC deletes images asynchronously); a bound on a hang, not a timed assertion."""
    deadline = time.monotonic() + bound
    while not predicate():
        assert time.monotonic() < deadline, "still not settled after %ss" % bound
        time.sleep(0.1)


@pytest.fixture(scope="module")
def emulator(s3_rclone, tmp_path_factory):
    base = tmp_path_factory.mktemp("vpc-images")
    (base / "data").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VPC_EMULATOR_S3_ACCESS_KEY", s3_rclone.access_key_id)
        env.setenv("VPC_EMULATOR_S3_SECRET_KEY", s3_rclone.secret_access_key)
        server = start(API_KEY, data_dir=str(base / "data"), delay=0.3, s3_endpoint=s3_rclone.endpoint)
    yield server
    server.stop()


@pytest.fixture
def vpc(emulator):
    """A fresh state per test: every OS offered, no quota, every bucket authorised, quick tokens off."""
    yield emulator
    while emulator.state()["faults_left"]:  # a fault a failing test left would hit the next one: spend it
        requests.get(emulator.service_url(REGION) + "/images", timeout=10)
    emulator.settings(delay=0.3, token_seconds=3600)
    emulator.set_quota("image", None)
    for region in emulator.regions:
        emulator.control("POST", "/image-quotas", {"region": region, "limit": None})
    emulator.control("PUT", "/operating_systems/%s" % REGION, {"names": list(_os_catalog())})


def _os_catalog():
    from tests.emulators.vpc_images_os import CATALOG
    return sorted(CATALOG)


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory):
    """``make(size_mb)``: the bytes of a small real qcow2 image holding a marker."""
    def make(size_mb, marker=b"boot"):
        path = tmp_path_factory.mktemp("q") / "disk.qcow2"
        raw = path.with_suffix(".raw")
        raw.write_bytes(marker * 1024)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
        subprocess.run(["qemu-img", "resize", "-q", str(path), "%dM" % size_mb], check=True)
        return path.read_bytes()
    return make


def _vhd_of(qcow2_bytes, work):
    """The same disk as a VHD (qemu-img's ``vpc`` format), made in the directory ``work``."""
    source, target = work / "d.qcow2", work / "d.vhd"
    source.write_bytes(qcow2_bytes)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "vpc", str(source), str(target)], check=True)
    return target.read_bytes()


class Lab:
    """A bucket of image objects and the ibm_vpc target of one server."""

    def __init__(self, vpc, s3, server):
        self.vpc, self.s3, self.server = vpc, s3, server
        self.bucket = s3.make_bucket("vi-%s" % uuid.uuid4().hex[:12])

    def params(self, **extra):
        ibm_vpc = dict(api_key=API_KEY, region=REGION, endpoint=self.vpc.service_url(REGION), iam_url=self.vpc.iam_url,
                       operating_system="debian-12-amd64", cos_region=self.s3.region, max_retries=3, retry_interval=0.05,
                       wait_sleep=0.2)
        ibm_vpc.update(extra.pop("ibm_vpc", {}))
        return dict({"target": "ibm_vpc", "server": self.server, "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/",
                     "ibm_vpc": ibm_vpc, "wait_timeout": 60, "wait_sleep": 0.05}, **extra)

    def target(self, **extra):
        return _providers.target(self.params(**extra))

    def upload(self, when, body):
        key = _naming.object_key("images/", self.server, when, "qcow2")
        meta = {"created-by": _naming.CREATED_BY, "sha256": hashlib.sha256(body).hexdigest(), "format": "qcow2", "snapshot-time": when,
                "source-server": self.server}
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=meta)
        return key


@pytest.fixture
def lab(vpc, s3_rclone):
    return Lab(vpc, s3_rclone, "web%s" % uuid.uuid4().hex[:6])


def sdk(server, region=REGION):
    client = VpcV1(authenticator=IAMAuthenticator(API_KEY, url=server.iam_url))
    client.set_service_url(server.service_url(region))
    return client


def images(server, region=REGION):
    return {i["name"]: i for i in sdk(server, region).list_images(limit=100).get_result()["images"]}


def _wait_status(client, image_id, wanted, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        found = client.get_image(image_id).get_result()
        if found["status"] == wanted:
            return found
        assert found["status"] == "pending" and time.monotonic() < deadline, found
        time.sleep(0.05)


def test_image_answers_fit_the_sdk_models(lab, qcow2, tmp_path):
    body = qcow2(16)
    key = lab.upload(T1, body)
    client = sdk(lab.vpc)
    OperatingSystemCollection.from_dict(client.list_operating_systems(limit=3).get_result())
    OperatingSystem.from_dict(client.get_operating_system("debian-12-amd64").get_result())
    href = "cos://%s/%s/%s" % (lab.s3.region, lab.bucket, key)
    made = client.create_image({"name": lab.server + "-a", "file": {"href": href}, "operating_system": {"name": "debian-12-amd64"}})
    assert made.get_status_code() == 201 and made.get_result()["status"] == "pending" and "sha256" not in json.dumps(made.get_result())
    Image.from_dict(made.get_result())
    done = _wait_status(client, made.get_result()["id"], "available")
    Image.from_dict(done)
    assert done["file"]["checksums"]["sha256"] == hashlib.sha256(body).hexdigest() and done["minimum_provisioned_size"] == 1
    assert done["operating_system"]["name"] == "debian-12-amd64" and done["user_data_format"] == "cloud_init" and len(done["zones"]) == 3
    for suffix in "bcd":
        client.create_image({"name": lab.server + "-" + suffix, "file": {"href": href}, "operating_system": {"name": "debian-12-amd64"}})
    names, start_token = [], None
    while True:
        page = client.list_images(limit=2, start=start_token, visibility="private").get_result()
        ImageCollection.from_dict(page)
        names += [i["name"] for i in page["images"] if i["name"].startswith(lab.server)]
        if "next" not in page:
            break
        start_token = get_query_param(page["next"]["href"], "start")
    assert names == [lab.server + "-" + s for s in "abcd"]
    assert [i["name"] for i in client.list_images(name=lab.server + "-c").get_result()["images"]] == [lab.server + "-c"]
    assert client.list_images(visibility="public").get_result()["images"] == []

    vhd = lab.bucket + "-vhd.vhd"
    made_vhd = _vhd_of(qcow2(8), tmp_path)
    lab.s3.client().put_object(Bucket=lab.bucket, Key=vhd, Body=made_vhd)
    from_vhd = client.create_image({"name": lab.server + "-vhd", "file": {"href": "cos://%s/%s/%s" % (lab.s3.region, lab.bucket, vhd)},
                                    "operating_system": {"name": "debian-12-amd64"}}).get_result()
    assert _wait_status(client, from_vhd["id"], "available")["file"]["checksums"]["sha256"] == hashlib.sha256(made_vhd).hexdigest()
    client.delete_image(from_vhd["id"])

    def code_of(call, *args):
        with pytest.raises(ApiException) as err:
            call(*args)
        return err.value.status_code, err.value.http_response.json()["errors"][0]["code"]

    proto = {"file": {"href": href}, "operating_system": {"name": "debian-12-amd64"}}
    assert code_of(client.create_image, dict(proto, name=lab.server + "-a")) == (409, "validation_unique_failed")
    assert code_of(client.update_image, done["id"], {"name": lab.server + "-b"}) == (409, "validation_unique_failed")
    assert code_of(client.create_image, dict(proto, name="ibm-mine"))[0] == 400
    assert code_of(client.create_image, dict(proto, file={"href": href[:-6] + ".raw"}))[0] == 400
    assert code_of(client.create_image, dict(proto, operating_system={"name": "plan9-amd64"})) == (404, "operating_system_not_found")
    assert code_of(client.get_operating_system, "plan9-amd64")[0] == 404
    assert client.update_image(done["id"], {"name": lab.server + "-z"}).get_result()["name"] == lab.server + "-z"
    assert client.delete_image(done["id"]).get_status_code() == 202
    assert client.get_image(done["id"]).get_result()["status"] == "deleting"
    _settled(lambda: _gone(client, done["id"]))
    assert code_of(client.get_image, done["id"]) == (404, "image_not_found")


def test_failed_imports_say_why(lab, qcow2):
    client = sdk(lab.vpc)
    good = lab.upload(T1, qcow2(8))
    broken = lab.upload(T2, b"QFI\xfb" + b"\xff" * 4096)

    def outcome(key, bucket=None):
        href = "cos://%s/%s/%s" % (lab.s3.region, bucket or lab.bucket, key)
        made = client.create_image({"file": {"href": href}, "operating_system": {"name": "debian-12-amd64"}}).get_result()
        failed = _wait_status(client, made["id"], "failed")
        Image.from_dict(failed)
        assert "file" in failed and "checksums" not in failed["file"]
        return failed["status_reasons"][0]["message"]

    assert "not a qcow2 image" in outcome(broken)
    vhd_key = good[:-len("qcow2")] + "vhd"  # the extension names the format: a QCOW2 named .vhd is refused
    lab.s3.client().copy_object(Bucket=lab.bucket, Key=vhd_key, CopySource={"Bucket": lab.bucket, "Key": good})
    assert "not a vhd image (qemu-img sees qcow2)" in outcome(vhd_key)
    assert "was not found" in outcome("images/nothing.qcow2")
    lab.vpc.control("POST", "/image-buckets", {"bucket": lab.bucket, "authorised": False})
    try:
        assert "not authorized to read bucket %s" % lab.bucket in outcome(good)
    finally:
        lab.vpc.control("POST", "/image-buckets", {"bucket": lab.bucket, "authorised": True})
    lab.vpc.set_quota("image", len(images(lab.vpc)))
    with pytest.raises(ApiException) as err:
        client.create_image({"file": {"href": "cos://x/%s/%s" % (lab.bucket, good)}, "operating_system": {"name": "debian-12-amd64"}})
    assert err.value.status_code == 400 and "quota" in err.value.http_response.json()["errors"][0]["code"]


def test_import_rotates_after_available_prunes_only_its_own_and_reruns_clean(lab, qcow2):
    client = sdk(lab.vpc)
    foreign = lab.upload("2026-01-01T00:00:00Z", qcow2(8))
    href = "cos://%s/%s/%s" % (lab.s3.region, lab.bucket, foreign)
    for name in (lab.server + "-golden", lab.server + "-20200101"):  # not the collection's names: never pruned
        client.create_image({"name": name, "file": {"href": href}, "operating_system": {"name": "debian-12-amd64"}})
    target = lab.target()
    keys = [lab.upload(when, qcow2(8 + i, marker=b"v%d" % i)) for i, when in enumerate((T1, T2, T3))]
    preview = target.import_image(keys[0], snapshot_time=T1, keep_last=2, check_mode=True)
    assert preview["changed"] is True and preview["image"]["name"] == _naming.image_name(lab.server, T1)
    assert _naming.latest_name(lab.server) not in images(lab.vpc)
    first = target.import_image(keys[0], snapshot_time=T1, keep_last=2)
    latest = images(lab.vpc)[_naming.latest_name(lab.server)]
    assert first["changed"] is True and latest["status"] == "available" and latest["operating_system"]["name"] == "debian-12-amd64"
    assert latest["file"]["checksums"]["sha256"] == first["image"]["sha256"]
    again = target.import_image(keys[0], snapshot_time=T1, keep_last=2)
    assert again["changed"] is False and again["previous_latest"] is None

    seen = len(lab.vpc.control("GET", "/requests")["requests"])
    second = target.import_image(keys[1], snapshot_time=T2, keep_last=2)
    assert second["previous_latest"]["name"] == _naming.image_name(lab.server, T1)
    calls = lab.vpc.control("GET", "/requests")["requests"][seen:]
    new_id, old_id = second["image"]["id"], first["image"]["id"]
    became_available = max(i for i, c in enumerate(calls) if c[0] == "GET" and c[1].endswith("/images/" + new_id))
    renamed_old = next(i for i, c in enumerate(calls) if c[0] == "PATCH" and c[1].endswith("/images/" + old_id))
    assert renamed_old > became_available  # the previous latest keeps its name until the new image is available
    named = images(lab.vpc)
    assert named[_naming.latest_name(lab.server)]["id"] == new_id and named[_naming.image_name(lab.server, T1)]["id"] == old_id

    third = target.import_image(keys[2], snapshot_time=T3, keep_last=2)
    assert third["pruned"] == [_naming.image_name(lab.server, T1)]
    expected = sorted([lab.server + "-golden", lab.server + "-20200101", _naming.image_name(lab.server, T2), _naming.latest_name(lab.server)])
    _settled(lambda: sorted(n for n in images(lab.vpc) if n.startswith(lab.server)) == expected)  # the pruned one is gone once deleted
    check = target.import_image(keys[2], snapshot_time=T3, keep_last=2, check_mode=True)
    assert check["changed"] is False and target.import_image(keys[2], snapshot_time=T3, keep_last=2)["changed"] is False


def _latest_id(lab):
    return images(lab.vpc)[_naming.latest_name(lab.server)]["id"]


def _fails(lab, key, when, *wanted, **params):
    before = {n: i["id"] for n, i in images(lab.vpc).items() if n.startswith(lab.server)}
    with pytest.raises(ReplicationError) as info:
        lab.target(**params).import_image(key, snapshot_time=when)
    assert info.value.msg.startswith("Failed to import image") and API_KEY not in str(info.value.msg) + json.dumps(info.value.details, default=str)
    for text in wanted:
        assert text in info.value.msg
    # Latest intact, no failed image left (once VPC has finished deleting it).
    _settled(lambda: {n: i["id"] for n, i in images(lab.vpc).items() if n.startswith(lab.server)} == before)
    return info.value.msg


def test_failures_leave_the_latest_and_name_the_fix(lab, qcow2):
    lab.target().import_image(lab.upload(T1, qcow2(8)), snapshot_time=T1)
    latest = _latest_id(lab)
    broken = lab.upload(T2, b"QFI\xfb" + b"\x00" * 4096)
    _fails(lab, broken, T2, "not a qcow2 image", "upload it again")
    _fails(lab, "images/%s/%s.qcow2" % (lab.server, _naming.image_name(lab.server, T3)), T3, "does not exist", "cos_upload")
    key = lab.upload(T2, qcow2(9))
    lab.vpc.control("POST", "/image-buckets", {"bucket": lab.bucket, "authorised": False})
    try:
        _fails(lab, key, T2, "not authorized to read bucket", "service-to-service", "Reader")
    finally:
        lab.vpc.control("POST", "/image-buckets", {"bucket": lab.bucket, "authorised": True})
    lab.vpc.control("PUT", "/operating_systems/%s" % REGION, {"names": ["ubuntu-24-04-amd64", "rocky-linux-9-amd64"]})
    _fails(lab, key, T2, "operating system debian-12-amd64 is not offered in region eu-de", "rocky-linux-9-amd64, ubuntu-24-04-amd64")
    lab.vpc.control("PUT", "/operating_systems/%s" % REGION, {"names": _os_catalog()})
    lab.vpc.control("POST", "/image-quotas", {"region": REGION, "limit": len(images(lab.vpc))})  # eu-de is full, us-south is not
    _fails(lab, key, T2, "quota")
    us_south = sdk(lab.vpc, "us-south").create_image({"file": {"href": "cos://%s/%s/%s" % (lab.s3.region, lab.bucket, key)},
                                                      "operating_system": {"name": "debian-12-amd64"}}).get_result()
    sdk(lab.vpc, "us-south").delete_image(us_south["id"])
    lab.vpc.control("POST", "/image-quotas", {"region": REGION, "limit": None})
    assert _latest_id(lab) == latest
    done = lab.target().import_image(key, snapshot_time=T2)  # the re-run completes
    assert done["latest"]["name"] == _naming.image_name(lab.server, T2) and _latest_id(lab) == done["image"]["id"]


def test_token_expires_mid_wait_and_throttling_is_retried(lab, qcow2):
    lab.vpc.settings(token_seconds=1, delay=2.5)
    issued = lab.vpc.state()["tokens_issued"]
    lab.vpc.inject("GET", r"/v1/images/", 429, count=2, retry_after=0)
    lab.vpc.inject("POST", r"/v1/images$", 503, count=1)
    lab.vpc.inject("PATCH", r"/v1/images/", 502, count=1)
    result = lab.target().import_image(lab.upload(T1, qcow2(8)), snapshot_time=T1)
    assert result["changed"] is True and result["latest"]["name"] == _naming.image_name(lab.server, T1)
    assert lab.vpc.state()["tokens_issued"] >= issued + 2 and lab.vpc.state()["faults_left"] == 0
    statuses = [c[2] for c in lab.vpc.control("GET", "/requests")["requests"]]
    assert {429, 503, 502} <= set(statuses) and 401 not in statuses[-40:]
    assert API_KEY not in json.dumps(result)


def test_retries_run_out_and_a_wrong_key_fail_without_the_key(lab, qcow2):
    key = lab.upload(T1, qcow2(8))
    lab.vpc.inject("GET", r"/v1/images$", 503, count=2)  # the first try and the one retry
    with pytest.raises(ReplicationError) as info:
        lab.target(ibm_vpc={"max_retries": 1}).import_image(key, snapshot_time=T1)
    assert "kept answering HTTP 503" in info.value.msg and "max_retries" in info.value.msg and lab.vpc.state()["faults_left"] == 0
    wrong = "wrongKey-" + API_KEY[::-1]
    with pytest.raises(ReplicationError) as info:
        lab.target(ibm_vpc={"api_key": wrong}).info()
    assert "ibm_vpc.api_key" in info.value.msg and wrong not in info.value.msg and API_KEY not in info.value.msg


def test_keep_days_prunes_by_snapshot_age_and_an_os_without_user_images_is_refused(lab, qcow2):
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    old, recent, newest = (_naming.format_time((now - datetime.timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ")) for d in (50, 10, 1))
    target = lab.target()
    for i, when in enumerate((old, recent)):
        target.import_image(lab.upload(when, qcow2(8 + i, marker=b"d%d" % i)), snapshot_time=when, keep_last=1, keep_days=30)
    key = lab.upload(newest, qcow2(10))
    preview = target.import_image(key, snapshot_time=newest, keep_last=1, keep_days=30, check_mode=True)
    assert preview["pruned"] == [_naming.image_name(lab.server, old)] and _naming.image_name(lab.server, old) in images(lab.vpc)
    done = target.import_image(key, snapshot_time=newest, keep_last=1, keep_days=30)
    assert done["pruned"] == preview["pruned"] and done["orphaned"] == []
    assert [i["name"] for i in target.info()["images"]] == [_naming.image_name(lab.server, t) for t in (recent, newest)]
    later = _naming.format_time(now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    _fails(lab, lab.upload(later, qcow2(9)), later, "esxi-8-byol-amd64", "takes no user images", ibm_vpc={"operating_system": "esxi-8-byol-amd64"})


def test_images_from_a_volume_retirement_dates_and_refusals(tmp_path):
    from tests.emulators.vpc_server import VpcEmulator
    (tmp_path / "data").mkdir()
    with VpcEmulator(API_KEY, delay=0.1, data_dir=str(tmp_path / "data")) as emu:
        client = sdk(emu)
        vol = emu.seed_volume(REGION, "boot-1", capacity=20)
        emu.write_volume(vol["id"], b"volume bytes" * 100)

        def refused(call, *args, **kwargs):
            with pytest.raises(ApiException) as err:
                call(*args, **kwargs)
            return err.value.status_code, err.value.http_response.json()["errors"][0]["code"]

        assert refused(client.create_image, {"name": "no-os", "source_volume": {"id": vol["id"]}})[0] == 400
        with emu.lock:
            emu.store["volume"][vol["id"]]["operating_system"] = {"name": "debian-12-amd64", "href": "x", "user_data_format": "cloud_init"}
        made = client.create_image({"name": "from-volume", "source_volume": {"id": vol["id"]}}).get_result()
        done = _wait_status(client, made["id"], "available")
        Image.from_dict(done)
        assert done["source_volume"]["id"] == vol["id"] and done["minimum_provisioned_size"] == 20
        assert (tmp_path / "data" / (made["id"] + ".img")).read_bytes()[:1200] == b"volume bytes" * 100

        proto = {"name": "enc", "file": {"href": "cos://eu-de/b/k.qcow2"}, "operating_system": {"name": "debian-12-amd64"}}
        assert refused(client.create_image, dict(proto, encrypted_data_key="abc")) == (400, "validation_required_field")
        assert refused(client.create_image, dict(proto, operating_system={"name": "esxi-8-byol-amd64"}))[1] == "operating_system_not_allowed"
        assert refused(client.update_image, made["id"], {"deprecation_at": "2001-01-01T00:00:00Z"})[0] == 400
        assert refused(client.update_image, made["id"], {"deprecation_at": "2099-01-02T00:00:00Z",
                                                         "obsolescence_at": "2099-01-01T00:00:00Z"})[0] == 400
        etag = client.get_image(made["id"]).get_headers()["ETag"]
        assert refused(client.update_image, made["id"], {"name": "renamed"}, headers={"If-Match": 'W/"stale"'})[0] == 412
        assert client.update_image(made["id"], {"name": "renamed"}, headers={"If-Match": etag}).get_result()["name"] == "renamed"
        assert client.obsolete_image(made["id"]).get_status_code() == 202  # available -> obsolete is allowed
        gone = client.get_image(made["id"]).get_result()
        assert gone["status"] == "obsolete" and gone["obsolescence_at"]
        assert refused(client.deprecate_image, made["id"])[0] == 409
        client.delete_image(made["id"])
        assert refused(client.delete_image, made["id"])[0] == 409  # already deleting


def test_an_import_past_wait_timeout_is_deleted_and_says_so(lab, qcow2):
    lab.target().import_image(lab.upload(T1, qcow2(8)), snapshot_time=T1)
    latest = _latest_id(lab)
    lab.vpc.settings(delay=3)
    with pytest.raises(ReplicationError) as info:
        lab.target(wait_timeout=1).import_image(lab.upload(T2, qcow2(9)), snapshot_time=T2)
    for text in ("still pending after 1s", "raise wait_timeout", "was deleted"):
        assert text in info.value.msg
    assert "QCOW2" not in info.value.msg  # nothing is known to be wrong with the object
    unfinished = _naming.image_name(lab.server, T2)
    assert images(lab.vpc)[unfinished]["status"] == "deleting" and _latest_id(lab) == latest
    deadline = time.monotonic() + 30
    while unfinished in images(lab.vpc):
        assert time.monotonic() < deadline, "the unfinished image was never deleted"
        time.sleep(0.2)


def test_image_import_module_with_target_ibm_vpc_runs_four_ways_and_never_shows_the_key(lab, qcow2):
    from tests.harness import run_module
    args = dict(lab.params(), key=lab.upload(T1, qcow2(8)), snapshot_time=T1, keep_last=2)
    for unknown_to_the_module in ("wait_sleep", "wait_timeout"):  # image_import has no wait options of its own (ibm_vpc.wait_sleep paces it)
        args.pop(unknown_to_the_module, None)
    preview = run_module("image_import", args, check_mode=True)
    assert not preview.get("failed"), preview
    assert preview["changed"] is True and _naming.latest_name(lab.server) not in images(lab.vpc)
    first = run_module("image_import", args)
    assert first["changed"] is True and first["latest"]["name"] == _naming.image_name(lab.server, T1), first
    assert first["latest"]["vpc_name"] == _naming.latest_name(lab.server) and _latest_id(lab) == first["image"]["id"]
    assert run_module("image_import", args, check_mode=True)["changed"] is False
    assert run_module("image_import", args)["changed"] is False
    lab.vpc.control("PUT", "/operating_systems/%s" % REGION, {"names": ["ubuntu-24-04-amd64"]})
    refused = run_module("image_import", dict(args, key=lab.upload(T2, qcow2(9)), snapshot_time=T2))
    assert refused.get("failed") and "not offered in region eu-de" in refused["msg"]
    assert all(API_KEY not in json.dumps(result) for result in (preview, first, refused))
