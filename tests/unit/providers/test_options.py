"""The provider option group: every adapter's OPTIONS reach the modules, once, with their no_log kept."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.vmimage.replication.plugins.module_utils import _module, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

SECRET = "fakeCloudKey/9Zq3LxT0pWm4NvB8cR2sYu6dHjK"


@pytest.fixture
def fake_provider(monkeypatch):
    """An adapter module ``_fake_adapter`` with a secret option, registered as provider ``fake``."""
    module = types.ModuleType("_fake_adapter")
    module.OPTIONS = dict(fake_api_key=dict(type="str", no_log=True), fake_region=dict(type="str", default="r1"))

    class Source(_providers.Source):
        name = "fake"

        def server_info(self, server):
            raise ReplicationError("Failed to find server %s with key %s in %s" % (server, self.params["fake_api_key"], self.params["fake_region"]))

    module.Source = Source
    monkeypatch.setitem(sys.modules, "%s._fake_adapter" % _providers._PACKAGE, module)
    monkeypatch.setitem(_providers.SOURCES, "fake", "_fake_adapter")
    monkeypatch.setitem(_module._GROUPS, "provider", dict(provider=dict(type="str", choices=sorted(_providers.SOURCES), default="local")))


def _run(task, args, groups):
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        with pytest.raises(SystemExit):
            _module.ReplicationModule({"server": dict(type="str")}, groups=groups).run(task)
    return json.loads(out.getvalue())


def test_group_carries_every_adapters_options_and_no_log(fake_provider):
    spec = _module.argument_spec({}, "provider")
    assert spec["fake_api_key"]["no_log"] is True and spec["snapshot_dir"]["type"] == "path" and spec["loop"]["default"] is False
    assert "cos" not in spec and "bucket" not in spec  # target options stay in the catalog group
    assert {"cos", "bucket", "prefix", "target", "server"} <= set(_module.argument_spec({}, "catalog"))


def test_a_secret_option_is_masked_even_when_an_error_slips_it(fake_provider):
    result = _run(lambda module: _providers.source(module.params).server_info(module.params["server"]),
                  dict(provider="fake", fake_api_key=SECRET, server="web01"), ("provider",))
    assert result["failed"] and result["msg"].startswith("Failed to find server web01 with key ********")
    assert SECRET not in json.dumps(result)


def test_an_option_of_no_adapter_is_refused(fake_provider):
    result = _run(lambda module: {}, dict(provider="local", no_such_option=1), ("provider",))
    assert result["failed"] and "no_such_option" in result["msg"]
