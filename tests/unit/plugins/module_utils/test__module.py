"""The one wrapper: errors become one clear fail_json line, shared option groups are composed."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vmimage.replication.plugins.module_utils import _module
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def _run(task, args=None, groups=(), **kwargs):
    out = io.StringIO()
    with patch_module_args(args or {}), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            _module.ReplicationModule({}, groups=groups, **kwargs).run(task)
    return json.loads(out.getvalue())


def test_result_is_returned():
    result = _run(lambda module: dict(changed=True, value=3))
    assert result["changed"] is True and result["value"] == 3 and "failed" not in result


def test_replication_error_keeps_its_message_and_details():
    def fail(module):
        raise ReplicationError("Failed to convert disk /x: gone; check src", src="/x")

    result = _run(fail)
    assert result["failed"] and result["msg"] == "Failed to convert disk /x: gone; check src" and result["src"] == "/x"


def test_unexpected_os_error_is_one_line_naming_the_path(tmp_path):
    missing = str(tmp_path / "no" / "such" / "file")

    def write(module):
        with open(missing, "w"):
            pass

    result = _run(write, action="convert the disk")
    assert result["failed"]
    assert result["msg"].startswith("Failed to convert the disk: No such file or directory on %s" % missing)
    assert "Traceback" not in result["msg"]


def test_cos_group_masks_the_secret_and_requires_one_way_to_authenticate():
    secret = "vmImgSecret/UnitTest0123456789abcdefABCD"
    cos = dict(endpoint="http://127.0.0.1:9", access_key_id="AKIAVMIMAGEUNIT00001", secret_access_key=secret)

    def echo(module):
        raise ReplicationError("Failed to reach %s with %s" % (module.params["cos"]["endpoint"], module.params["cos"]["secret_access_key"]))

    result = _run(echo, dict(cos=cos), groups=("cos",))
    assert secret not in json.dumps(result) and "********" in result["msg"]  # no_log values are masked even if code slips
    missing_auth = _run(lambda module: {}, dict(cos=dict(endpoint="http://127.0.0.1:9")), groups=("cos",))
    assert missing_auth["failed"] and "access_key_id" in missing_auth["msg"] and "api_key" in missing_auth["msg"]
