"""image_import / image_info (target bucket_catalog) against both real S3 servers."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess

import pytest
from ibm_botocore.exceptions import ClientError

from tests.conftest import ACCESS_KEY_ID, SECRET_ACCESS_KEY
from tests.contract import assert_return_contract

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _cos, _naming
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

SERVER = "web-01.prod"


@pytest.fixture(scope="module")
def qcow2_bodies(tmp_path_factory):
    """Five distinct tiny real qcow2 images (different virtual sizes)."""
    bodies = []
    for i in range(5):
        path = tmp_path_factory.mktemp("q") / ("i%d.qcow2" % i)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "%dM" % (16 + i)], check=True)
        bodies.append(path.read_bytes())
    return bodies


def _when(days_ago):
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return _naming.format_time(now - datetime.timedelta(days=days_ago))


def _upload(s3_server, bucket, body, snapshot_time, fmt="qcow2", server=SERVER, **extra_meta):
    key = _naming.object_key("images/", server, snapshot_time, fmt)
    sha = hashlib.sha256(body).hexdigest()
    meta = {"created-by": "vmimage.replication", "sha256": sha, "format": fmt, "snapshot-time": snapshot_time, "source-server": server}
    meta.update(extra_meta)
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
    return key, sha


def _args(s3_server, bucket, **kw):
    args = dict(cos=s3_server.cos(), bucket=bucket, server=SERVER)
    args.update(kw)
    return args


def _keys(s3_server, bucket):
    return sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def _catalog_body(s3_server, bucket):
    return s3_server.client().get_object(Bucket=bucket, Key="images/%s/catalog.json" % SERVER)["Body"].read()


def test_rotation_retention_idempotency(module_runner, s3_server, bucket, qcow2_bodies):
    times = [_when(d) for d in (40, 30, 20, 10)]
    key0, sha0 = _upload(s3_server, bucket, qcow2_bodies[0], times[0])
    args = _args(s3_server, bucket, key=key0, sha256=sha0, keep_last=2, source_fingerprint="1:2:3")

    # check mode: same answer, nothing written
    check = module_runner("image_import", args, check_mode=True)
    assert check.get("changed") is True and check["latest"]["key"] == key0, check.get("msg")
    assert _keys(s3_server, bucket) == [key0]

    first = module_runner("image_import", args)
    assert_return_contract("image_import", first)
    assert first["changed"] is True and first["previous_latest"] is None and first["pruned"] == []
    assert first["image"] == dict(name=_naming.image_name(SERVER, times[0]), key=key0, sha256=sha0, snapshot_time=times[0],
                                  size=len(qcow2_bodies[0]), format="qcow2", source_fingerprint="1:2:3",
                                  guest_sha256=None)
    assert first["latest"] == first["image"]
    catalog = json.loads(_catalog_body(s3_server, bucket))
    assert catalog["latest"] == first["image"]["name"] and catalog["created-by"] == "vmimage.replication"

    # re-import: no change in check mode nor for real, catalog not rewritten
    body = _catalog_body(s3_server, bucket)
    assert module_runner("image_import", args, check_mode=True)["changed"] is False
    again = module_runner("image_import", args)
    assert again["changed"] is False and again["latest"]["key"] == key0 and again["previous_latest"] is None
    assert _catalog_body(s3_server, bucket) == body

    # second import rotates: the previous latest keeps its own timestamped name
    key1, _sha = _upload(s3_server, bucket, qcow2_bodies[1], times[1])
    second = module_runner("image_import", _args(s3_server, bucket, key=key1, keep_last=2))
    assert second["changed"] is True and second["latest"]["key"] == key1
    assert second["previous_latest"]["name"] == first["image"]["name"]
    assert [i["key"] for i in second["images"]] == [key0, key1] and second["pruned"] == []

    # third import with keep_last=2 prunes the oldest object, really
    key2, _sha = _upload(s3_server, bucket, qcow2_bodies[2], times[2])
    third_args = _args(s3_server, bucket, key=key2, keep_last=2)
    check = module_runner("image_import", third_args, check_mode=True)
    assert check["changed"] is True and check["pruned"] == [first["image"]["name"]]
    assert key0 in _keys(s3_server, bucket)
    third = module_runner("image_import", third_args)
    assert third["pruned"] == [first["image"]["name"]] and third["latest"]["key"] == key2
    assert key0 not in _keys(s3_server, bucket)
    assert [i["key"] for i in third["images"]] == [key1, key2]

    # an older snapshot is added but does not become the latest, and this run does not prune it
    t_old = _when(50)
    key_old, _sha = _upload(s3_server, bucket, qcow2_bodies[3], t_old)
    older = module_runner("image_import", _args(s3_server, bucket, key=key_old, keep_last=2))
    assert older["changed"] is True and older["latest"]["key"] == key2 and older["previous_latest"] is None
    assert [i["key"] for i in older["images"]] == [key_old, key1, key2]

    # keep_days keeps what is young enough even outside keep_last; the rest goes
    key3, _sha = _upload(s3_server, bucket, qcow2_bodies[4], times[3])
    fourth = module_runner("image_import", _args(s3_server, bucket, key=key3, keep_last=1, keep_days=25))
    assert fourth["latest"]["key"] == key3
    assert fourth["pruned"] == [_naming.image_name(SERVER, t_old), _naming.image_name(SERVER, times[1])]
    assert [i["key"] for i in fourth["images"]] == [key2, key3]
    assert _keys(s3_server, bucket) == sorted([key2, key3, "images/%s/catalog.json" % SERVER])

    info = module_runner("image_info", _args(s3_server, bucket))
    assert_return_contract("image_info", info)
    assert info["latest"] == fourth["latest"] and info["images"] == fourth["images"] and info["orphans"] == []

    # absent: not the latest unless forced
    latest_name = fourth["latest"]["name"]
    refused = module_runner("image_import", _args(s3_server, bucket, name=latest_name, state="absent"))
    assert refused["failed"] and "force" in refused["msg"]
    absent_args = _args(s3_server, bucket, name=_naming.image_name(SERVER, times[2]), state="absent")
    assert module_runner("image_import", absent_args, check_mode=True)["changed"] is True
    assert key2 in _keys(s3_server, bucket)
    gone = module_runner("image_import", absent_args)
    assert_return_contract("image_import", gone)
    assert gone["changed"] is True and key2 not in _keys(s3_server, bucket)
    assert module_runner("image_import", _args(s3_server, bucket, name=_naming.image_name(SERVER, times[2]), state="absent"))["changed"] is False
    forced = module_runner("image_import", _args(s3_server, bucket, name=SERVER + "-latest", state="absent", force=True))
    assert forced["changed"] is True and forced["latest"] is None and forced["images"] == []


def test_failed_imports_leave_catalog_and_latest_untouched(module_runner, s3_server, bucket, qcow2_bodies):
    key0, sha0 = _upload(s3_server, bucket, qcow2_bodies[0], _when(3))
    assert module_runner("image_import", _args(s3_server, bucket, key=key0))["changed"] is True
    body = _catalog_body(s3_server, bucket)

    key1, sha1 = _upload(s3_server, bucket, qcow2_bodies[1], _when(2))
    bad = module_runner("image_import", _args(s3_server, bucket, key=key1, sha256="0" * 64))
    assert bad["failed"] and "sha256" in bad["msg"] and sha1 in bad["msg"] and key1 in bad["msg"]

    key2, _sha = _upload(s3_server, bucket, b"this is not a disk image\n" * 40, _when(1))
    for check_mode in (True, False):
        bad = module_runner("image_import", _args(s3_server, bucket, key=key2), check_mode=check_mode)
        assert bad["failed"] and "declared qcow2 but is not qcow2" in bad["msg"], bad

    missing = module_runner("image_import", _args(s3_server, bucket, key="images/%s/nothing.qcow2" % SERVER))
    assert missing["failed"] and "does not exist" in missing["msg"] and "cos_upload" in missing["msg"]

    other = module_runner("image_import", _args(s3_server, bucket, key=key1, snapshot_time=_when(9)))
    assert other["failed"] and "differs" in other["msg"]

    assert _catalog_body(s3_server, bucket) == body
    info = module_runner("image_info", _args(s3_server, bucket))
    assert info["latest"]["key"] == key0
    # the uploads that were never imported are reported as orphans
    assert sorted(o["key"] for o in info["orphans"]) == sorted([key1, key2])


def test_bad_options_and_missing_bucket(module_runner, s3_server, bucket, qcow2_bodies):
    key0, _sha = _upload(s3_server, bucket, qcow2_bodies[0], _when(1))
    res = module_runner("image_import", _args(s3_server, bucket, key=key0, keep_last=0))
    assert res["failed"] and "keep_last" in res["msg"]
    res = module_runner("image_import", _args(s3_server, bucket, key=key0, server="bad/name"))
    assert res["failed"] and "server name" in res["msg"]
    for module, extra in (("image_import", dict(key=key0)), ("image_info", {})):
        res = module_runner(module, _args(s3_server, "no-such-bucket-x1", **extra))
        assert res["failed"] and "no-such-bucket-x1" in res["msg"] and s3_server.endpoint in res["msg"], res
        # AnsibleModule masks no_log values before printing: a leaked secret would show as ********
        assert SECRET_ACCESS_KEY not in json.dumps(res) and "********" not in res["msg"], res["msg"]
    res = module_runner("image_info", _args(s3_server, bucket, cos=s3_server.cos(secret_access_key="x" * 40)))
    assert res["failed"] and "x" * 40 not in json.dumps(res) and "********" not in res["msg"], res["msg"]


def test_catalog_errors_never_contain_the_secret(s3_server, bucket, qcow2_bodies):
    """The messages _catalog raises, before any Ansible masking, for a wrong secret and a missing bucket."""
    key0, _sha = _upload(s3_server, bucket, qcow2_bodies[0], _when(1))
    wrong = "wrongSecret/" + "Zq7" * 10
    cos = s3_server.cos(secret_access_key=wrong)
    catalog = _catalog.Catalog(_cos.connect(cos), cos, bucket, "images/", SERVER)
    with pytest.raises(ReplicationError) as info:
        _catalog.import_image(catalog, key0)
    assert info.value.msg.startswith("Failed to ") and s3_server.endpoint in info.value.msg, info.value.msg
    assert wrong not in info.value.msg and wrong not in repr(info.value.details)
    cos = s3_server.cos()
    catalog = _catalog.Catalog(_cos.connect(cos), cos, "no-such-bucket-x1", "images/", SERVER)
    with pytest.raises(ReplicationError) as info:
        _catalog.import_image(catalog, key0)
    assert info.value.msg.startswith("Failed to ") and "no-such-bucket-x1" in info.value.msg, info.value.msg
    assert SECRET_ACCESS_KEY not in info.value.msg and SECRET_ACCESS_KEY not in repr(info.value.details)


@pytest.mark.parametrize("module", ["image_import", "image_info"])
def test_bad_endpoint_is_a_clear_error(module_runner, module):
    cos = dict(endpoint="not a url", access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)
    args = dict(cos=cos, bucket="dr-images", server=SERVER)
    if module == "image_import":
        args["key"] = "images/%s/x.qcow2" % SERVER
    res = module_runner(module, args)
    assert res["failed"] and res["msg"].startswith("Failed to connect to cos.endpoint not a url: "), res
    assert "cos.endpoint" in res["msg"].split(";", 1)[1] and "exception" not in res
    assert SECRET_ACCESS_KEY not in json.dumps(res) and "********" not in res["msg"]
    with pytest.raises(ReplicationError) as info:
        _catalog.connect(cos)
    assert "not a url" in info.value.msg and SECRET_ACCESS_KEY not in info.value.msg


class _Refusing:
    """The real client of a real server, except that ``method`` on ``key`` raises the ClientError a refusing server answers.

    Fault injection at the client boundary: neither S3 server can be told to refuse one PUT or DELETE.
    """

    def __init__(self, client, method, key=None, code="InternalError"):
        self._client, self._method, self._key, self._code = client, method, key, code

    def __getattr__(self, name):
        real = getattr(self._client, name)
        if name != self._method:
            return real

        def call(**kwargs):
            if self._key is None or kwargs.get("Key") == self._key:
                raise ClientError({"Error": {"Code": self._code, "Message": "injected"}}, name)
            return real(**kwargs)
        return call


def test_failed_catalog_write_deletes_nothing(module_runner, s3_server, bucket, qcow2_bodies):
    key0, _sha = _upload(s3_server, bucket, qcow2_bodies[0], _when(2))
    assert module_runner("image_import", _args(s3_server, bucket, key=key0, keep_last=1))["changed"] is True
    body = _catalog_body(s3_server, bucket)
    key1, _sha = _upload(s3_server, bucket, qcow2_bodies[1], _when(1))
    cos = s3_server.cos()
    manifest = _catalog.manifest_key("images/", SERVER)
    catalog = _catalog.Catalog(_Refusing(_cos.connect(cos), "put_object", manifest, code="AccessDenied"), cos, bucket, "images/", SERVER)
    attempts = [lambda: _catalog.import_image(catalog, key1, keep_last=1),  # would prune key0, the latest
                lambda: _catalog.remove_image(catalog, SERVER + "-latest", force=True)]
    for attempt in attempts:
        with pytest.raises(ReplicationError) as info:
            attempt()
        assert info.value.msg.startswith("Failed to write catalog s3://%s/%s at %s: AccessDenied" % (bucket, manifest, s3_server.endpoint)), info.value.msg
        assert _catalog_body(s3_server, bucket) == body
        listed = [e["key"] for e in json.loads(body)["images"]]
        assert listed == [key0] and set(listed) <= set(_keys(s3_server, bucket))
    info = module_runner("image_info", _args(s3_server, bucket))
    assert info["latest"]["key"] == key0 and [o["key"] for o in info["orphans"]] == [key1]


def test_failed_delete_after_catalog_write_is_reported_as_orphan(module_runner, s3_server, bucket, qcow2_bodies, monkeypatch):
    key0, _sha = _upload(s3_server, bucket, qcow2_bodies[0], _when(2))
    assert module_runner("image_import", _args(s3_server, bucket, key=key0, keep_last=1))["changed"] is True
    key1, _sha = _upload(s3_server, bucket, qcow2_bodies[1], _when(1))
    connect = _catalog.connect
    monkeypatch.setattr(_catalog, "connect", lambda cos: _Refusing(connect(cos), "delete_object", code="AccessDenied"))
    res = module_runner("image_import", _args(s3_server, bucket, key=key1, keep_last=1))
    assert_return_contract("image_import", res)
    name0 = res["pruned"][0]
    assert res["changed"] is True and res["latest"]["key"] == key1 and [i["key"] for i in res["images"]] == [key1]
    assert [(o["key"], o["name"]) for o in res["orphaned"]] == [(key0, name0)] and "AccessDenied" in res["orphaned"][0]["msg"]
    assert key0 in json.dumps(res["warnings"]) and "by hand" in json.dumps(res["warnings"])  # 2.19 returns structured warnings
    assert json.loads(_catalog_body(s3_server, bucket))["latest"] == res["latest"]["name"]
    assert key0 in _keys(s3_server, bucket)
    monkeypatch.undo()
    info = module_runner("image_info", _args(s3_server, bucket))
    assert [o["key"] for o in info["orphans"]] == [key0]
    # a normal run reports nothing orphaned
    gone = module_runner("image_import", _args(s3_server, bucket, name=SERVER + "-latest", state="absent", force=True))
    assert gone["changed"] is True and gone["orphaned"] == [] and key1 not in _keys(s3_server, bucket)
