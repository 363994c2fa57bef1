"""ibm_vpc adapter: pure logic (tags, names, the by-id path, error translation) and the real SDK against an IAM token endpoint."""

from __future__ import annotations

import json

import pytest
import requests
from ibm_cloud_sdk_core import ApiException

from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc, _ibm_vpc_client as vpcc, _module, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

API_KEY = "vpcUnitKey-7Hq2XmP9sLw4ZbN6cVt1RyJ3"


def _exc(status, body, url="https://us-south.iaas.cloud.ibm.com/v1/instances"):
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()  # pylint: disable=protected-access
    response.url = url
    response.headers["Content-Type"] = "application/json"
    return ApiException(status, http_response=response)


def test_tags_round_trip_and_mark_ours():
    user_tags = vpcc.tags(source_server="web01", snapshot_time="20260301-120000", nothing=None)
    assert user_tags == ["created-by:vmimage.replication", "snapshot-time:20260301-120000", "source-server:web01"]
    parsed = vpcc.parse_tags(user_tags + ["env:prod", "plain"])
    assert parsed["source-server"] == "web01" and parsed["env"] == "prod" and "plain" not in parsed
    assert vpcc.ours({"user_tags": user_tags}) and not vpcc.ours({"user_tags": ["created-by:someone"]}) and not vpcc.ours({})


def test_by_id_path_is_the_first_20_characters_of_the_attachment_id():
    att = "0757-7f9c2d1e-4b5a-4c3d-9e8f-123456789abc"
    assert vpcc.by_id_path("/dev/disk/by-id", att) == "/dev/disk/by-id/virtio-0757-7f9c2d1e-4b5a-4"
    for bad in ("", None, "../../etc/passwd", "a/b"):
        with pytest.raises(ValueError):
            vpcc.by_id_path("/dev/disk/by-id", bad)


def test_volume_names_fit_vpc_limits():
    assert _ibm_vpc.volume_name("web01-20260301-120000") == "web01-20260301-120000-conv"
    assert len(_ibm_vpc.volume_name("a" * 80)) <= 63


def test_settings_fill_defaults_and_urls():
    vpc = vpcc.settings({"ibm_vpc": {"region": "eu-de", "api_key": API_KEY, "by_id_dir": None}})
    assert vpc["by_id_dir"] == "/dev/disk/by-id" and vpc["iam_url"] == vpcc.DEFAULT_IAM_URL
    assert vpcc.service_url(vpc) == "https://eu-de.iaas.cloud.ibm.com/v1"
    assert vpcc.service_url(vpc, "us-east") == "https://us-east.iaas.cloud.ibm.com/v1"
    assert vpcc.service_url(dict(vpc, endpoint="http://127.0.0.1:9/v1/")) == "http://127.0.0.1:9/v1"
    with pytest.raises(ReplicationError, match="set ibm_vpc.region"):
        vpcc.service_url({})


def test_the_api_key_option_is_secret_with_env_fallbacks():
    spec = _module.argument_spec({}, "provider")["ibm_vpc"]["options"]
    assert spec["api_key"]["no_log"] is True and spec["api_key"]["fallback"][1] == ["IC_API_KEY", "IBMCLOUD_API_KEY"]
    assert "ibm_vpc" in _module.argument_spec({}, "catalog")


@pytest.mark.parametrize("status, body, url, wanted", [
    (400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"}, "https://iam.cloud.ibm.com/identity/token",
     "check ibm_vpc.api_key"),
    (404, {"errors": [{"code": "not_found", "message": "Instance not found"}], "trace": "t-1"}, None, "instance abc does not exist"),
    (403, {"errors": [{"code": "forbidden", "message": "no"}]}, None, "IAM service-to-service authorisation"),
    (400, {"errors": [{"code": "volume_capacity_quota_exceeded", "message": "quota exceeded"}]}, None, "volume_capacity_quota_exceeded"),
    (409, {"errors": [{"code": "conflict", "message": "busy"}]}, None, "HTTP 409 conflict: busy"),
])
def test_api_errors_say_what_to_fix(status, body, url, wanted):
    exc = _exc(status, body, url or "https://us-south.iaas.cloud.ibm.com/v1/x")
    err = vpcc.fail(exc, "import image web01", "instance abc", secret=API_KEY, bucket="images" if status == 403 else None)
    assert err.msg.startswith("Failed to import image web01: HTTP %d" % status) and wanted in err.msg and err.details["code"] == status


def test_the_key_is_masked_even_if_an_answer_echoes_it():
    exc = _exc(400, {"errors": [{"code": "bad", "message": "key %s rejected" % API_KEY}]})
    err = vpcc.fail(exc, "list instances", "instances", secret=API_KEY)
    assert API_KEY not in err.msg and "********" in err.msg


def test_missing_key_is_a_clear_error():
    with pytest.raises(ReplicationError, match="set ibm_vpc.api_key or the environment variable IC_API_KEY"):
        vpcc.connect({"region": "us-south"})


def test_wrong_api_key_through_the_real_sdk_names_the_option_and_hides_the_key(tmp_path):
    from tests.emulators.powervs import PowerVSEmulator  # an IAM token endpoint that refuses unknown keys as IAM does

    with PowerVSEmulator("theRightKey-Zq81LmXv0PwNs4TbRc6Y", {}) as emu:
        params = {"provider": "ibm_vpc", "ibm_vpc": {"api_key": API_KEY, "endpoint": emu.url + "/v1", "iam_url": emu.iam_url,
                                                     "max_retries": 0, "retry_interval": 0.1}}
        adapter = _providers.source(params)
        with pytest.raises(ReplicationError) as info:
            adapter.server_info("web01")
    assert "check ibm_vpc.api_key" in info.value.msg and API_KEY not in info.value.msg and API_KEY not in json.dumps(info.value.details)


def test_unreachable_endpoint_is_a_clear_error():
    from tests.peers.ports import free_port

    params = {"ibm_vpc": {"api_key": API_KEY, "endpoint": "http://127.0.0.1:%d/v1" % free_port(), "iam_url": "http://127.0.0.1:%d" % free_port(),
                          "max_retries": 0}}
    with pytest.raises(ReplicationError, match="cannot reach IBM Cloud VPC|check ibm_vpc"):
        _ibm_vpc.Source(params).server_info("web01")


@pytest.fixture
def iam_http(request):
    """A loopback HTTP peer with IAM's token endpoint, fault injection (429 with Retry-After, 5xx) and expiring tokens.

    It knows no VPC route, so a call that gets through answers 404: enough to see that the SDK as the adapter builds it
    retries throttling and server errors and renews tokens.
    """
    from tests.emulators.powervs import PowerVSEmulator

    with PowerVSEmulator(API_KEY, {}, token_seconds=getattr(request, "param", 3600)) as emu:
        yield emu


def _source(emu, **vpc):
    settings = {"api_key": API_KEY, "endpoint": emu.url + "/v1", "iam_url": emu.iam_url, "max_retries": 3, "retry_interval": 0.2}
    settings.update(vpc)
    return _ibm_vpc.Source({"ibm_vpc": settings, "wait_timeout": 5, "wait_sleep": 0.1})


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_and_server_errors_are_retried(iam_http, status):
    iam_http.fail("GET", r"^/v1/instances", status, times=2, retry_after=1)
    with pytest.raises(ReplicationError) as info:
        _source(iam_http).server_info("web01")
    assert "HTTP 404" in info.value.msg, info.value.msg  # both injected answers were retried; the third call got through
    iam_http.fail("GET", r"^/v1/instances", status, times=1, retry_after=1)
    with pytest.raises(ReplicationError) as info:
        _source(iam_http, max_retries=0).server_info("web01")
    assert "kept answering HTTP %d" % status in info.value.msg and "max_retries" in info.value.msg and API_KEY not in info.value.msg


@pytest.mark.parametrize("iam_http", [2], indirect=True)
def test_a_token_that_expires_mid_run_is_renewed(iam_http):
    import time

    adapter = _source(iam_http)
    for _unused in range(2):
        with pytest.raises(ReplicationError) as info:
            adapter.server_info("web01")
        assert "HTTP 404" in info.value.msg  # not 401: the token was accepted
        time.sleep(2.5)  # the 2 s token runs out between the calls
    assert iam_http.issued == 2


def test_the_doc_fragment_documents_every_option_as_declared():
    import yaml

    from ansible_collections.vmimage.replication.plugins.doc_fragments.ibm_vpc import ModuleDocFragment

    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["ibm_vpc"]["suboptions"]
    declared = vpcc.OPTIONS["ibm_vpc"]["options"]
    assert set(documented) == set(declared)
    for name, spec in declared.items():
        assert documented[name]["type"] == spec["type"] and documented[name].get("default") == spec.get("default"), name
        assert documented[name]["description"], name


def test_images_of_the_server_are_told_by_name_and_the_latest_by_its_record(monkeypatch):
    listed = [
        {"id": "i1", "name": "web01-20260301-120000", "status": "available", "created_at": "2026-03-01T13:00:00Z",
         "file": {"size": 1, "checksums": {"sha256": "a"}}},
        {"id": "i2", "name": "web01-latest", "status": "available", "created_at": "2026-03-02T13:05:00Z", "file": {"size": 1, "checksums": {"sha256": "b"}}},
        {"id": "i3", "name": "web01-20260303-120000", "status": "failed", "created_at": "2026-03-03T13:00:00Z"},
        {"id": "i4", "name": "web010-latest", "status": "available"}, {"id": "i5", "name": "web01-manual", "status": "available"},
    ]
    target = _ibm_vpc.Target({"server": "web01", "ibm_vpc": {"api_key": API_KEY, "region": "us-south"}})
    monkeypatch.setattr(target.api, "pages", lambda *a, **k: listed)
    record = {"id": "i2", "snapshot_time": "2026-03-02T12:00:00Z"}
    entries = target.entries(record)
    assert [(e["name"], e["vpc_name"], e["status"]) for e in entries] == [
        ("web01-20260301-120000", "web01-20260301-120000", "available"), ("web01-20260302-120000", "web01-latest", "available"),
        ("web01-20260303-120000", "web01-20260303-120000", "failed")]
    manifest = target._manifest(entries)  # pylint: disable=protected-access
    assert manifest["latest"] == "web01-20260302-120000" and len(manifest["images"]) == 2
    # a latest the record does not describe falls back to its creation time
    assert target.entries({"id": "other"})[1]["name"] == "web01-20260302-130500"


@pytest.mark.parametrize("params, wanted", [
    ({"ibm_vpc": {"wait_sleep": 0.05}, "wait_sleep": 15.0}, 15.0),  # a module's own pace first (snapshot_copy: hours-long copies)
    ({"ibm_vpc": {"wait_sleep": 0.05}}, 0.05),                      # the connection's for a module without one
    ({"ibm_vpc": {"wait_sleep": None}, "wait_sleep": 5.0}, 5.0),
    ({"ibm_vpc": {}}, 2.0),                                         # then two seconds
])
def test_waits_look_at_the_pace_the_options_set(monkeypatch, params, wanted):
    seen = {}

    def wait_until(probe, timeout, sleep, failure_states=(), what=""):
        seen["sleep"] = sleep
        return {"status": "stable"}

    monkeypatch.setattr(vpcc._wait, "wait_until", wait_until)  # pylint: disable=protected-access
    assert vpcc.wait(lambda: (True, {}), params, "snapshot s1", (), "copy the snapshot") == {"status": "stable"}
    assert seen["sleep"] == wanted


def test_a_negative_wait_sleep_is_refused_naming_the_option():
    with pytest.raises(ReplicationError) as info:
        vpcc.wait(lambda: (True, {}), {"ibm_vpc": {"wait_sleep": -1.0}}, "snapshot s1", (), "take the snapshot")
    assert info.value.msg == "Failed to take the snapshot: wait_sleep is -1.0; give a number of seconds above 0"
