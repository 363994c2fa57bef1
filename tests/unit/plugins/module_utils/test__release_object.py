# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""image_import's keep_object=false: refused where the object is the image; a failed delete is a warning, not a failed import."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types

import pytest
from ansible.module_utils import _internal as ansible_internal
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_catalog, _cos, _module, _providers
from ansible_collections.vmimage.replication.plugins.modules import image_import
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

ClientError = _cos.ClientError  # ibm-cos-sdk's, which _cos catches

PARAMS = {"cos": {"endpoint": "http://s3.example", "secret_access_key": "s3cr3t-never-shown"}, "bucket": "dr", "server": "web01",
          "prefix": "images/"}
KEY = "images/web01/web01-20261129-070000.qcow2"


class Library(_providers.Target):
    name = "a_library"


class Bucket:
    def __init__(self, objects, deny=False):
        self.objects, self.deny = set(objects), deny

    def head_object(self, Bucket, Key):  # noqa: N803 - boto3's names
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": 1, "Metadata": {}}

    def delete_object(self, Bucket, Key):  # noqa: N803
        if self.deny:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "DeleteObject")
        self.objects.discard(Key)


@pytest.fixture
def bucket(monkeypatch):
    store = {}

    def connect(cos, max_pool_connections=10):
        return store["bucket"]
    monkeypatch.setattr(_cos, "connect", connect)
    return store


def test_the_object_is_deleted_once_and_check_mode_only_says_so(bucket):
    bucket["bucket"] = Bucket([KEY])
    assert _providers.release_object(Library(PARAMS), KEY, check_mode=True) == (True, None)
    assert KEY in bucket["bucket"].objects
    assert _providers.release_object(Library(PARAMS), KEY) == (True, None)
    assert bucket["bucket"].objects == set()
    assert _providers.release_object(Library(PARAMS), KEY) == (False, None)  # gone already


def test_a_failed_delete_is_a_warning_naming_the_object_and_no_secret(bucket):
    bucket["bucket"] = Bucket([KEY], deny=True)
    deleted, warning = _providers.release_object(Library(PARAMS), KEY)
    assert not deleted and KEY in warning and "dr" in warning and "image is imported" in warning
    assert "s3cr3t" not in warning
    assert KEY in bucket["bucket"].objects


def test_the_bucket_catalog_refuses_before_anything_is_imported():
    with pytest.raises(ReplicationError, match="would delete the image itself"):
        _providers.check_release(_bucket_catalog.Target(PARAMS), KEY)
    _providers.check_release(Library(PARAMS), KEY)  # a library with its own copy may


class _Undeletable:
    def head_object(self, Bucket, Key):  # noqa: N803
        return {"ContentLength": 1, "Metadata": {}}

    def delete_object(self, Bucket, Key):  # noqa: N803
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "DeleteObject")


def test_an_unverified_object_that_cannot_be_deleted_is_named_for_the_hand():
    from ansible_collections.vmimage.replication.plugins.module_utils import _image_upload  # pylint: disable=import-outside-toplevel

    left = _image_upload._delete_unverified(_Undeletable(), "dr", KEY)  # pylint: disable=protected-access
    assert "AccessDenied" in left and "delete s3://dr/%s by hand" % KEY in left
    assert _image_upload._delete_unverified(Bucket([KEY]), "dr", KEY) is None  # pylint: disable=protected-access


def _image_import_with_a_library(monkeypatch, args):
    """Run the image_import module in this process against ``Library`` registered as target ``a_library``."""
    class Imported(Library):
        def import_image(self, key, **_kwargs):
            image = {"name": "web01-20261129-070000", "key": key}
            return dict(changed=True, image=image, latest=image, previous_latest=None, pruned=[], orphaned=[], images=[image])

    adapter = types.ModuleType("_a_library")
    adapter.Target = Imported
    monkeypatch.setitem(sys.modules, "%s._a_library" % _providers._PACKAGE, adapter)  # pylint: disable=protected-access
    monkeypatch.setitem(_providers.TARGETS, "a_library", "_a_library")
    catalog = dict(_module.CATALOG_SPEC, target=dict(type="str", choices=sorted(_providers.TARGETS), default="bucket_catalog"))
    monkeypatch.setitem(_module._GROUPS, "catalog", catalog)  # pylint: disable=protected-access
    # A test of controller code earlier in this worker makes module warnings go to the display instead of the result.
    monkeypatch.setattr(ansible_internal, "is_controller", False)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            image_import.main()
    return json.loads(out.getvalue())


def test_through_the_module_a_denied_delete_is_a_warning_and_the_import_stands(bucket, monkeypatch):
    bucket["bucket"] = Bucket([KEY], deny=True)
    args = dict(PARAMS, cos=dict(PARAMS["cos"], access_key_id="AKID"), target="a_library", key=KEY, keep_object=False)
    result = _image_import_with_a_library(monkeypatch, args)
    assert not result.get("failed"), result
    assert result["changed"] and result["object_deleted"] is False and result["image"]["key"] == KEY
    warnings = json.dumps(result.get("warnings", []))  # ansible-core 2.19 returns structured warnings: read their text
    assert KEY in warnings and "the image is imported, delete the object by hand" in warnings, result
    assert "s3cr3t" not in str(result)
    assert KEY in bucket["bucket"].objects

    bucket["bucket"] = Bucket([KEY])
    result = _image_import_with_a_library(monkeypatch, args)
    assert result["object_deleted"] is True and KEY not in bucket["bucket"].objects
