"""Run a module of the collection in-process and capture what it returned.

One harness for every module test: it feeds the arguments the way Ansible does,
runs ``main()``, and returns the JSON the module printed (``failed`` set when it
called fail_json).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json

from unittest import mock

from ansible.module_utils import _internal as module_internal
from ansible.module_utils.testing import patch_module_args


def run_module(name, args, check_mode=False, diff=False):
    module = importlib.import_module("ansible_collections.vmimage.replication.plugins.modules.%s" % name)
    full_args = dict(args)
    full_args["_ansible_check_mode"] = check_mode
    full_args["_ansible_diff"] = diff
    out = io.StringIO()
    # Once a test has imported controller code, ansible-core shows module warnings on the
    # controller's display instead of returning them; a module run is never the controller.
    with patch_module_args(full_args), contextlib.redirect_stdout(out), mock.patch.object(module_internal, "is_controller", False):
        try:
            module.main()
        except SystemExit:
            pass
    text = out.getvalue()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise AssertionError("module %s printed no JSON result: %r" % (name, text)) from exc
