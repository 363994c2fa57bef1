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
import os
import subprocess
import sys

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


_DRIVER = r"""
import json, os, sys, time
sys.path[:0] = json.loads(os.environ["VMI_PATH"])
delay = float(os.environ["VMI_PART_DELAY"])
if delay:  # slow the upload down, so that a test can interrupt it midway
    from ansible_collections.vmimage.replication.plugins.module_utils import _multipart
    add = _multipart.Counter.add
    def slow_add(self, count):
        add(self, count)
        time.sleep(delay)
    _multipart.Counter.add = slow_add
from tests.harness import run_module
with open(os.environ["VMI_ARGS"]) as handle:
    print(json.dumps(run_module(os.environ["VMI_MODULE"], json.load(handle))))
"""


def spawn_module(name, args, workdir, part_delay=0.0):
    """Run module ``name`` in a child process, to kill or signal it midway.

    Its arguments (secrets among them) go in a 0600 file in ``workdir``, never on a command line;
    ``part_delay`` makes every uploaded part take that many seconds longer.
    """
    path = os.path.join(str(workdir), "%s-args.json" % name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(args, handle)
    env = dict(os.environ, VMI_PATH=json.dumps(sys.path), VMI_ARGS=path, VMI_MODULE=name, VMI_PART_DELAY=str(part_delay))
    return subprocess.Popen([sys.executable, "-c", _DRIVER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def final_result(process, timeout=60):
    """Wait for a spawned module to end (killing it after ``timeout``); the JSON result it printed."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    lines = out.decode().strip().splitlines()
    assert lines, "the module printed no result: %s" % err.decode()[-2000:]
    return json.loads(lines[-1])
