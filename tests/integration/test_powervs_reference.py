# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The PowerVS emulator, run as a subprocess, against IBM's Power Cloud API reference: every answer it gives is checked
against the reference's models (tests/emulators/powervs_reference.py: no Power SDK with models exists on PyPI), and
the rules the reference states (required fields, enums, defaults, one import at a time, CRN, errors) hold."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

import pytest
import requests

from ansible_collections.vmimage.replication.plugins.module_utils import _naming
from tests.emulators import powervs_control
from tests.emulators.powervs_reference import MODELS, problems
from tests.peers.powervc_image import write_ova

API_KEY = "pvsRefApiKey-Q8mZ2xLc7VbN4sRt1YuKd9FgJhW3"


@pytest.fixture(scope="module")
def emulator(s3_rclone, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("pvs-ref") / "api-key"
    key_file.write_text(API_KEY)
    key_file.chmod(0o600)
    process = powervs_control.start(key_file, {s3_rclone.region: s3_rclone.endpoint}, queued_seconds=0.2, running_seconds=0.6)
    try:
        yield process
    finally:
        process.stop()


class Api:
    """Raw calls as the reference shows them; every JSON answer is checked against the model the reference gives it."""

    def __init__(self, emulator, ws):
        self.emulator, self.ws = emulator, ws
        self.base = "%s/pcloud/v1/cloud-instances/%s" % (emulator.url, ws["id"])
        token = requests.post(emulator.iam_url + "/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": API_KEY},
                              headers={"Accept": "application/json"}, timeout=10).json()
        self.headers = {"Authorization": "Bearer " + token["access_token"], "CRN": ws["crn"], "Accept": "application/json"}
        self.drift = []
        self.checked = set()

    def call(self, method, path, model, body=None, headers=None, params=None):
        answer = requests.request(method, self.base + path, json=body, headers=headers or self.headers, params=params, timeout=10)
        payload = answer.json()
        expected = model if answer.status_code < 400 else "Error"
        if expected:
            self.drift += problems(expected, payload, "%s %s -> %s" % (method, path, answer.status_code))
            self.checked.add(expected)
        return answer.status_code, payload


@pytest.fixture
def api(emulator):
    ws = emulator.control("POST", "/workspaces", {"region": "us-south", "storage_types": ["tier1", "tier3"]})
    emulator.control("POST", "/timing", {"queued_seconds": 0.2, "running_seconds": 0.6, "progress_steps": 4})
    emulator.control("POST", "/hold", {"hold": False})
    client = Api(emulator, ws)
    yield client
    assert client.drift == [], client.drift  # every answer of the test matched the reference


@pytest.fixture
def ova_key(s3_rclone, tmp_path):
    bucket = s3_rclone.make_bucket("pvsref-%s" % uuid.uuid4().hex[:10])
    path = tmp_path / "x.ova"
    write_ova(str(path), "aix72-base", disk_mb=2)
    body = path.read_bytes()
    key = _naming.object_key("images/", "aix72-base", "20260301-100000", "ova")
    s3_rclone.client().put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": hashlib.sha256(body).hexdigest()})
    return bucket, key


def _import_body(s3, bucket, key, **changes):
    body = {"imageName": "ref-%s" % uuid.uuid4().hex[:6], "bucketName": bucket, "imageFilename": key, "region": s3.region,
            "bucketAccess": "private", "accessKey": s3.access_key_id, "secretKey": s3.secret_access_key, "osType": "aix"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _follow(api, job_id):
    states = []
    for _unused in range(400):
        status, job = api.call("GET", "/jobs/%s" % job_id, "Job")
        assert status == 200
        states.append(job["status"]["state"])
        if states[-1] in ("completed", "failed"):
            return states, job
        time.sleep(0.02)
    raise AssertionError("job %s never finished: %s" % (job_id, states[-5:]))


def test_import_lifecycle_matches_the_reference(api, s3_rclone, ova_key):
    status, ref = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key, osType="rhel"))
    assert status == 202 and set(ref) == {"id", "href"} and ref["href"].endswith("/jobs/%s" % ref["id"])
    states, job = _follow(api, ref["id"])
    assert states[0] == "queued" and "running" in states and states[-1] == "completed" and job["status"]["progress"] == "100"
    assert job["operation"]["action"] == "imageImport" and job["operation"]["target"] == "image"
    assert api.call("GET", "/cos-images", "Job")[1]["id"] == ref["id"]
    status, listed = api.call("GET", "/images", "Images")
    assert status == 200 and len(listed["images"]) == 1
    image_id = listed["images"][0]["imageID"]
    assert listed["images"][0]["storageType"] == "tier3"  # no type, pool or affinity: the reference's default
    status, image = api.call("GET", "/images/%s" % image_id, "Image")
    assert image["specifications"]["operatingSystem"] == "rhel" and image["storagePool"] == "Tier3-pool-1" and image["size"] >= 1
    assert api.call("DELETE", "/images/%s" % image_id, None)[0] == 200
    assert api.call("GET", "/images/%s" % image_id, "Image")[0] == 404
    assert api.call("DELETE", "/jobs/%s" % ref["id"], None)[0] == 200 and api.call("GET", "/jobs/%s" % ref["id"], "Job")[0] == 404
    assert {"JobReference", "Job", "Images", "Image", "Error"} <= api.checked


def test_storage_pool_wins_over_type_and_unknown_pool_is_refused(api, s3_rclone, ova_key):
    status, ref = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key, storageType="tier3", storagePool="Tier1-pool-1"))
    assert status == 202
    assert _follow(api, ref["id"])[0][-1] == "completed"
    image = api.call("GET", "/images", "Images")[1]["images"][0]
    assert (image["storagePool"], image["storageType"]) == ("Tier1-pool-1", "tier1")
    status, error = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key, storagePool="Tier0-pool-9"))
    assert status == 400 and "Tier0-pool-9" in error["description"] and "Tier1-pool-1" in error["description"]


@pytest.mark.parametrize("change, words", [
    ({"imageName": None}, ["imageName"]), ({"bucketName": None}, ["bucketName"]), ({"imageFilename": None}, ["imageFilename"]),
    ({"region": None}, ["region"]), ({"osType": "windows"}, ["osType", "aix"]), ({"bucketAccess": "shared"}, ["bucketAccess"]),
    ({"secretKey": None}, ["secretKey", "private"]), ({"storageType": "tier0"}, ["tier0", "tier1, tier3"]),
    ({"storageAffinity": {"affinityPolicy": "near"}}, ["affinityPolicy"]),
])
def test_bad_import_bodies_answer_400_in_the_error_shape(api, s3_rclone, ova_key, change, words):
    status, error = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key, **change))
    assert status == 400 and set(error) == set(MODELS["Error"]["required"]) and error["code"] == 400
    assert all(word in error["description"] for word in words), error
    assert api.call("GET", "/jobs", "Jobs")[1]["jobs"] == []  # nothing was started


def test_one_import_at_a_time_job_list_filters_and_failing_a_running_job(api, emulator, s3_rclone, ova_key):
    emulator.control("POST", "/hold", {"hold": True})
    status, ref = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key))
    assert status == 202
    status, error = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key))
    assert status == 409 and "in progress" in error["description"]
    assert api.call("DELETE", "/jobs/%s" % ref["id"], None)[0] == 409  # a job that has not finished stays
    assert [j["id"] for j in api.call("GET", "/jobs", "Jobs", params={"operation.action": "imageImport"})[1]["jobs"]] == [ref["id"]]
    assert api.call("GET", "/jobs", "Jobs", params={"operation.action": "vmCapture"})[1]["jobs"] == []
    answer = emulator.control("POST", "/jobs/%s/%s/fail" % (api.ws["id"], ref["id"]), {"message": "storage pool full"})
    assert answer["id"] == ref["id"]
    emulator.control("POST", "/hold", {"hold": False})
    states, job = _follow(api, ref["id"])
    assert states[-1] == "failed" and "storage pool full" in job["status"]["message"]
    assert api.call("GET", "/images", "Images")[1]["images"] == []
    for _unused in range(6):  # the list keeps the last five
        emulator.control("POST", "/fail-next-import", {"message": "injected"})
        status, ref = api.call("POST", "/cos-images", "JobReference", _import_body(s3_rclone, *ova_key))
        assert _follow(api, ref["id"])[0][-1] == "failed"
    jobs = api.call("GET", "/jobs", "Jobs")[1]["jobs"]
    assert len(jobs) == 5 and jobs[-1]["id"] == ref["id"]


def test_auth_crn_faults_and_unknown_routes(api, emulator):
    assert api.call("GET", "/images", "Images", headers={"Authorization": "Bearer not-a-token", "CRN": api.ws["crn"]})[0] == 401
    assert api.call("GET", "/images", "Images", headers={"Authorization": api.headers["Authorization"]})[0] == 403
    assert api.call("GET", "/images", "Images", headers=dict(api.headers, CRN="crn:v1:bluemix:public:power-iaas:us-south:a/x:y::"))[0] == 403
    emulator.control("POST", "/faults", {"method": "GET", "path_regex": "/images$", "status": 429, "times": 1, "retry_after": 2})
    answer = requests.get(api.base + "/images", headers=api.headers, timeout=10)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2" and not problems("Error", answer.json())
    emulator.control("POST", "/faults", {"method": "GET", "path_regex": "/images$", "status": 503, "times": 1})
    assert api.call("GET", "/images", "Images")[0] == 503
    assert api.call("GET", "/images", "Images")[0] == 200  # the faults were used up
    assert api.call("GET", "/volumes-nowhere", None)[0] == 404
    assert api.call("PUT", "/images", None)[0] == 405
    other = "%s/pcloud/v1/cloud-instances/%s/images" % (emulator.url, uuid.uuid4())
    answer = requests.get(other, headers=api.headers, timeout=10)
    assert answer.status_code == 404 and not problems("Error", answer.json())
    emulator.control("POST", "/expire-tokens")
    assert api.call("GET", "/images", "Images")[0] == 401
    bad = requests.post(emulator.iam_url + "/identity/token", data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "wrong"}, timeout=10)
    assert bad.status_code == 400


def test_control_path_refuses_nonsense_and_the_key_is_not_on_argv(emulator):
    for path, body in (("/faults", {"method": "GET"}), ("/timing", {"slowness": 3}), ("/nothing", {})):
        answer = requests.post("%s/_emulator%s" % (emulator.url, path), json=body, timeout=10)
        assert answer.status_code == 400 and answer.json()["description"]
    with open("/proc/%d/cmdline" % emulator.process.pid, "rb") as handle:
        assert API_KEY.encode() not in handle.read()
    assert "import_bodies" in emulator.control("GET", "/state") and API_KEY not in str(emulator.control("GET", "/state"))


def test_subprocess_stops_on_sigterm_and_an_empty_key_file_fails(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(RuntimeError, match="exited"):
        powervs_control.start(empty)
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    process = powervs_control.start(key_file)
    url = process.url
    try:
        assert requests.get(url + "/_emulator/requests", timeout=10).json() == {"requests": []}
    finally:
        process.stop()
    assert process.process.returncode == 0 and not os.path.exists("/proc/%d" % process.process.pid)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_emulator/requests", timeout=2)
