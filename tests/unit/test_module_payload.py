"""What Ansible ships with each module: the adapters only with the modules that choose one.

Ansible packages each module type once per playbook run, parsing every module_utils file its source names; the adapters
(IBM VPC, PowerVS, OpenStack, the bucket catalog) are most of the collection's code, so a lock, poll or upload module
that carried them paid for parsing them at every run. This builds the real payloads with Ansible's own packager."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.vmimage.replication.plugins.modules import run_lock

MODULES = os.path.dirname(run_lock.__file__)
ADAPTERS = ("_ibm_vpc", "_powervs", "_openstack", "_bucket_catalog", "_local_provider", "_providers")
NAMES = sorted(name[:-3] for name in os.listdir(MODULES) if name.endswith(".py") and not name.startswith("_"))

# Ansible's packager needs its collection loader, which takes over the interpreter's imports: it runs in a child.
BUILD = """
import datetime, io, json, os, sys, zipfile
from ansible.executor import module_common
from ansible.executor.module_common import _builder
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()
found = {}
for path in sys.argv[1:]:
    with open(path, "rb") as handle:
        data = handle.read()
    archive = zipfile.ZipFile(io.BytesIO(), "w")
    name = os.path.basename(path)[:-3]
    module_common.recursive_finder(name, module_common._get_ansible_module_fqn(path), data, archive,
                                   datetime.datetime.now(datetime.timezone.utc), _builder.ExtensionManager.create(task_vars={}))
    found[name] = sorted({os.path.basename(item)[:-3] for item in archive.namelist() if "/vmimage/replication/plugins/module_utils/" in item})
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def payloads():
    """Module name -> the collection's module_utils files that Ansible puts in its payload."""
    collections = MODULES.split(os.sep + "ansible_collections" + os.sep)[0]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", BUILD] + [os.path.join(MODULES, name + ".py") for name in NAMES],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return {name: set(files) for name, files in json.loads(result.stdout.splitlines()[-1]).items()}


def uses_adapters(name):
    """Whether the module asks ReplicationModule for the "catalog" or "provider" option group (its ``groups``)."""
    with open(os.path.join(MODULES, name + ".py")) as handle:
        tree = ast.parse(handle.read())
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "ReplicationModule":
            for keyword in call.keywords:
                if keyword.arg == "groups" and any(isinstance(node, ast.Constant) and node.value in ("catalog", "provider")
                                                   for node in ast.walk(keyword.value)):
                    return True
    return False


# The modules of the data path and the role's bookkeeping (several per server and run): no adapter of their own.
LEAN = ("run_lock", "run_dir", "job_progress", "host_slot", "image_upload", "qemu_convert", "cos_upload", "cos_multipart_uploads",
        "cos_object_prune", "image_verify", "powervc_export")


@pytest.mark.parametrize("name", NAMES)
def test_the_adapters_ship_with_the_modules_that_choose_one_and_not_with_the_lean_ones(name, payloads):
    shipped = payloads[name]
    assert "_module" in shipped, shipped
    if uses_adapters(name):
        # Its argument spec imports _providers by name at run time: it must be in the payload, with every adapter.
        assert set(ADAPTERS) <= shipped, (name, sorted(shipped))
    if name in LEAN:
        assert not set(ADAPTERS) & shipped, (name, sorted(set(ADAPTERS) & shipped))


def test_the_probe_tells_the_two_apart(payloads):
    assert uses_adapters("snapshot") and uses_adapters("image_info") and not uses_adapters("run_lock")
    assert not uses_adapters("snapshot_copy")  # its own option "provider" (aws, ibm_vpc) is not the group
    assert len(payloads["run_lock"]) < len(payloads["snapshot"])
