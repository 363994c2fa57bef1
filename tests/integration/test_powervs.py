# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target powervs through the real ibm-cloud-sdk-core against the PowerVS emulator, reading OVAs from a real S3 server (rclone)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import uuid

import requests

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from tests.emulators.powervs import PowerVSEmulator
from tests.peers.powervc_image import write_ova

API_KEY = "pvsApiKey-7Hq2LmZ9xWc4VbN1sRt8YuKd3FgJ"
IMAGE = "aix72-base"


@pytest.fixture
def pvs(s3_rclone):
    with PowerVSEmulator(API_KEY, {s3_rclone.region: s3_rclone.endpoint}, queued_seconds=0.2, running_seconds=0.6) as emulator:
        yield emulator


class Bed:
    def __init__(self, s3, emulator, tmp_path):
        self.s3, self.emulator, self.tmp_path = s3, emulator, tmp_path
        self.ws = emulator.add_workspace(region="us-south", storage_types=("tier1", "tier3"))
        self.bucket = s3.make_bucket("pvs-%s" % uuid.uuid4().hex[:12])

    def params(self, **powervs):
        value = dict(workspace_id=self.ws.id, crn=self.ws.crn, url=self.emulator.url, iam_url=self.emulator.url, api_key=API_KEY,
                     storage_type="tier1", os_type="aix", bucket_access="private", validate_certs=True, max_retries=3, retry_interval=0.2)
        value.update(powervs)
        return {"target": "powervs", "server": IMAGE, "cos": self.s3.cos(), "bucket": self.bucket, "prefix": "images/",
                "powervs": value, "wait_timeout": 60, "wait_sleep": 0.1, "progress_file": str(self.tmp_path / "progress.json")}

    def upload(self, stamp, body=None):
        path = self.tmp_path / ("%s.ova" % stamp)
        if body is None:
            write_ova(str(path), IMAGE, disk_mb=4)
            body = path.read_bytes()
        key = _naming.object_key("images/", IMAGE, stamp, "ova")
        meta = {"created-by": _naming.CREATED_BY, "sha256": hashlib.sha256(body).hexdigest(), "format": "ova",
                "snapshot-time": _naming.format_time(stamp), "source-server": IMAGE}
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=meta)
        return key

    def target(self, **powervs):
        return _providers.target(self.params(**powervs))


@pytest.fixture
def bed(s3_rclone, pvs, tmp_path):
    return Bed(s3_rclone, pvs, tmp_path)


def _posts(emulator):
    return [r for r in emulator.requests if r[0] == "POST" and r[1].endswith("/cos-images")]


def test_import_rotates_prunes_and_is_idempotent(bed):
    first = bed.upload("20260301-100000")
    result = bed.target().import_image(first, keep_last=2)
    assert result["changed"] and result["image"]["name"] == "aix72-base-20260301-100000" and result["image"]["status"] == "active"
    assert result["latest"]["name"] == result["image"]["name"] and result["job"]["state"] == "completed"
    body = bed.emulator.import_bodies[-1]
    assert body == {"imageName": "aix72-base-20260301-100000", "bucketName": bed.bucket, "imageFilename": first, "region": bed.s3.region,
                    "bucketAccess": "private", "accessKey": bed.s3.access_key_id, "storageType": "tier1", "osType": "aix"}

    again = bed.target().import_image(first, keep_last=2)
    assert not again["changed"] and len(_posts(bed.emulator)) == 1 and again["image"]["id"] == result["image"]["id"]

    bed.ws.images["foreign"] = {"imageID": "foreign", "name": "aix72-base-copy", "state": "active", "creationDate": "2026-01-01T00:00:00.000Z"}
    for stamp in ("20260302-100000", "20260303-100000"):
        result = bed.target().import_image(bed.upload(stamp), keep_last=2)
    assert result["latest"]["name"] == "aix72-base-20260303-100000"
    assert result["previous_latest"]["name"] == "aix72-base-20260302-100000"
    assert result["pruned"] == ["aix72-base-20260301-100000"]
    names = sorted(i["name"] for i in bed.ws.images.values())
    assert names == ["aix72-base-20260302-100000", "aix72-base-20260303-100000", "aix72-base-copy"]

    # An older export is added without moving the latest.
    older = bed.target().import_image(bed.upload("20260302-090000"), keep_last=5)
    assert older["changed"] and older["latest"]["name"] == "aix72-base-20260303-100000"

    info = _providers.target(bed.params()).info()
    assert info["latest"]["name"] == "aix72-base-20260303-100000" and len(info["images"]) == 3


def test_check_mode_says_what_it_would_import_and_prune(bed):
    bed.target().import_image(bed.upload("20260301-100000"))
    key = bed.upload("20260302-100000")
    result = bed.target().import_image(key, keep_last=1, check_mode=True)
    assert result["changed"] and result["image"]["name"] == "aix72-base-20260302-100000" and result["pruned"] == ["aix72-base-20260301-100000"]
    assert len(_posts(bed.emulator)) == 1 and len(bed.ws.images) == 1


def test_job_progress_throttling_and_token_expiry(bed):
    bed.emulator.token_seconds = 2
    bed.emulator.running_seconds = 3.0
    bed.emulator.progress_steps = 6
    bed.emulator.fail("POST", r"/cos-images$", 429, times=1, retry_after=0)
    bed.emulator.fail("GET", r"/jobs/", 503, times=2)
    seen = []
    original = bed.emulator.handle

    def spy(method, path, headers, body, **kwargs):
        answer = original(method, path, headers, body, **kwargs)
        if "/jobs/" in path and answer[0] == 200:
            seen.append((answer[1]["status"]["state"], answer[1]["status"]["progress"]))
        return answer

    bed.emulator.handle = spy
    result = bed.target().import_image(bed.upload("20260301-100000"))
    assert result["changed"] and result["image"]["status"] == "active"
    states = [s for s, _unused in seen]
    assert states[0] in ("queued", "running") and "running" in states and states[-1] == "completed"
    assert len({p for s, p in seen if s == "running"}) >= 2  # progress moved while it ran
    assert bed.emulator.issued >= 2  # the token was renewed during the wait
    assert any(r[2] == 429 for r in bed.emulator.requests) and sum(r[2] == 503 for r in bed.emulator.requests) == 2
    record = json.loads((bed.tmp_path / "progress.json").read_text())
    assert record["stage"] == "import" and record["state"] == "completed" and record["percent"] == 100.0


@pytest.mark.parametrize("case", ["workspace", "storage_type", "broken_ova", "job_fails", "api_key"])
def test_bad_input_fails_clearly_and_leaves_the_catalog(bed, case):
    bed.target().import_image(bed.upload("20260301-100000"))
    before = dict(bed.ws.images)
    params = {}
    body = None
    if case == "workspace":
        params = dict(workspace_id=str(uuid.uuid4()))
    elif case == "storage_type":
        params = dict(storage_type="tier0")
    elif case == "broken_ova":
        body = b"not an ova at all" * 64
    elif case == "job_fails":
        bed.emulator.fail_import = "insufficient storage in pool Tier1-pool-1"
    elif case == "api_key":
        params = dict(api_key="wrongKey-" + API_KEY[9:])
    key = bed.upload("20260302-100000", body=body) if case != "broken_ova" else None
    if case == "broken_ova":
        # declared an OVA but not a tar: refused before PowerVS is asked
        key = _naming.object_key("images/", IMAGE, "20260302-100000", "ova")
        meta = {"created-by": _naming.CREATED_BY, "sha256": hashlib.sha256(body).hexdigest(), "format": "ova",
                "snapshot-time": "2026-03-02T10:00:00Z", "source-server": IMAGE}
        bed.s3.client().put_object(Bucket=bed.bucket, Key=key, Body=body, Metadata=meta)
    with pytest.raises(ReplicationError) as err:
        bed.target(**params).import_image(key)
    msg = err.value.msg
    expected = {"workspace": ("not found", "powervs.workspace_id"), "storage_type": ("tier0 is not offered", "tier1, tier3"),
                "broken_ova": ("is not ova",), "job_fails": ("insufficient storage", "failed"), "api_key": ("api_key",)}[case]
    assert all(word in msg for word in expected), msg
    assert API_KEY not in msg and bed.s3.secret_access_key not in msg and bed.s3.secret_access_key not in json.dumps(err.value.details)
    assert bed.ws.images == before


def test_a_job_that_fails_after_making_an_image_leaves_nothing(bed):
    """A failed job leaves no image of its name: the broken OVA gets to PowerVS (its magic is right, its disk is not)."""
    path = bed.tmp_path / "x.ova"
    write_ova(str(path), IMAGE, disk_mb=4)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("%s.ovf" % IMAGE)
        data = b"<Envelope><References><File href='missing.qcow2'/></References></Envelope>"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    key = bed.upload("20260305-100000", body=path.read_bytes())
    with pytest.raises(ReplicationError) as err:
        bed.target().import_image(key)
    assert "names no disk file" in err.value.msg and not bed.ws.images


def test_modules_check_mode_real_idempotent_and_no_secret(bed, module_runner):
    key = bed.upload("20260310-120000")
    params = bed.params()
    args = {k: params[k] for k in ("server", "cos", "bucket", "prefix", "powervs", "wait_timeout", "wait_sleep", "progress_file")}
    args["key"] = key
    check = module_runner("pvs_import", args, check_mode=True)
    assert check["changed"] and check["image"]["name"] == "aix72-base-20260310-120000" and not bed.ws.images
    real = module_runner("pvs_import", args)
    assert real["changed"] and real["latest"]["id"] in bed.ws.images and real["job"]["state"] == "completed"
    again = module_runner("pvs_import", args)
    assert not again["changed"] and len(_posts(bed.emulator)) == 1
    info = module_runner("pvs_image_info", {"server": IMAGE, "powervs": args["powervs"]})
    assert not info.get("changed", True), info
    assert info["latest"]["id"] == real["latest"]["id"]
    text = json.dumps([check, real, again, info])
    assert API_KEY not in text and bed.s3.secret_access_key not in text
    failed = module_runner("pvs_import", dict(args, powervs=dict(args["powervs"], storage_type="tier0")))
    assert failed["failed"] and "storage type tier0 is not offered" in failed["msg"] and API_KEY not in json.dumps(failed)


def test_emulator_follows_the_reference_shapes(bed):
    """Raw calls as IBM's API reference shows them (an SDK-agnostic look at the emulator)."""
    token = requests.post(bed.emulator.url + "/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": API_KEY},
                          timeout=10).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0
    base = "%s/pcloud/v1/cloud-instances/%s" % (bed.emulator.url, bed.ws.id)
    headers = {"Authorization": "Bearer " + token["access_token"], "CRN": bed.ws.crn}
    missing = requests.post(base + "/cos-images", json={"imageName": "x"}, headers=headers, timeout=10)
    assert missing.status_code == 400 and {"description", "error"} <= set(missing.json())
    key = bed.upload("20260301-100000")
    body = {"imageName": "raw-import", "bucketName": bed.bucket, "imageFilename": key, "region": bed.s3.region, "bucketAccess": "private",
            "accessKey": bed.s3.access_key_id, "secretKey": bed.s3.secret_access_key, "osType": "aix", "storageType": "tier3"}
    started = requests.post(base + "/cos-images", json=body, headers=headers, timeout=10)
    assert started.status_code == 202 and set(started.json()) == {"id", "href"}
    busy = requests.post(base + "/cos-images", json=dict(body, imageName="second"), headers=headers, timeout=10)
    assert busy.status_code == 409
    job_url = "%s/jobs/%s" % (base, started.json()["id"])
    states = []
    for _unused in range(100):
        job = requests.get(job_url, headers=headers, timeout=10).json()
        states.append(job["status"]["state"])
        if job["status"]["state"] in ("completed", "failed"):
            break
        time.sleep(0.05)
    assert states[0] == "queued" and "running" in states and states[-1] == "completed", states
    assert job["operation"]["action"] == "imageImport" and job["operation"]["target"] == "image" and job["status"]["progress"] == "100"
    assert requests.get(base + "/cos-images", headers=headers, timeout=10).json()["id"] == job["id"]
    assert [j["id"] for j in requests.get(base + "/jobs", headers=headers, timeout=10).json()["jobs"]] == [job["id"]]
    images = requests.get(base + "/images", headers=headers, timeout=10).json()["images"]
    assert [i["name"] for i in images] == ["raw-import"] and images[0]["state"] == "active" and images[0]["storageType"] == "tier3"
    image = requests.get("%s/images/%s" % (base, images[0]["imageID"]), headers=headers, timeout=10).json()
    assert image["specifications"]["operatingSystem"] == "aix" and image["size"] >= 1
    assert requests.delete("%s/images/%s" % (base, images[0]["imageID"]), headers=headers, timeout=10).json() == {}
    assert requests.get(base + "/images/" + images[0]["imageID"], headers=headers, timeout=10).status_code == 404
    assert requests.get(base, headers={"Authorization": "Bearer nope", "CRN": bed.ws.crn}, timeout=10).status_code == 401
    assert requests.get(base, headers={"Authorization": headers["Authorization"], "CRN": "crn:other"}, timeout=10).status_code == 403


def test_sigterm_during_the_job_waits_for_it_and_deletes_its_image(bed):
    """PowerVS cannot stop an import job: a cancelled import follows it to its end and deletes what it made."""
    import os
    import signal
    import threading

    from ansible_collections.vmimage.replication.plugins.module_utils._errors import terminate_as_error

    bed.target().import_image(bed.upload("20260301-100000"))
    before = dict(bed.ws.images)
    bed.emulator.running_seconds, bed.emulator.progress_steps = 60.0, 60

    def cancel_when_running():
        for _unused in range(500):
            # Only while the import's handler is installed: a SIGTERM without it would end this pytest worker.
            if any(j["status"]["state"] == "running" for j in bed.ws.jobs.values()) and signal.getsignal(signal.SIGTERM) not in (
                    signal.SIG_DFL, signal.SIG_IGN, None):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)
                bed.emulator.running_seconds = 0.5  # the job goes on to completed, as in the cloud
                return
            time.sleep(0.02)

    thread = threading.Thread(target=cancel_when_running)
    thread.start()
    try:
        with pytest.raises(ReplicationError) as err:
            with terminate_as_error("import image of aix72-base into PowerVS"):
                bed.target().import_image(bed.upload("20260302-100000"))
    finally:
        bed.emulator.running_seconds = 0.5
        thread.join(30)
    assert "interrupted by SIGTERM" in err.value.msg
    assert [j["status"]["state"] for j in bed.ws.jobs.values()][-1] == "completed"  # it waited for the job's end
    assert bed.ws.images == before  # and deleted the image the job made
