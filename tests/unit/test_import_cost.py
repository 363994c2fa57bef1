"""What a task pays before it does anything: a module's argument spec and the collection's filters load no cloud SDK.

Every source or target module declares every adapter's options, and Ansible loads every filter file of the collection in
each task's worker when a template names one of its filters: an SDK imported there is paid by every task (it was about
0.3 s per role task and 1.3 s per module call on this machine). Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("ibm_boto3", "ibm_botocore", "ibm_vpc", "ibm_cloud_sdk_core", "openstack", "keystoneauth1", "Crypto", "boto3")
PACKAGE = "ansible_collections.vmimage.replication.plugins"


def loaded_after(code):
    """The HEAVY modules a fresh interpreter holds after running ``code``."""
    probe = "%s\nimport json, sys\nprint(json.dumps([m for m in %r if m in sys.modules]))" % (code, HEAVY)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_filter_files_load_no_sdk():
    names = [n[:-3] for n in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "filter")) if n.endswith(".py")]
    assert names
    code = "\n".join("import %s.filter.%s" % (PACKAGE, name) for name in sorted(names))
    assert loaded_after(code) == []


@pytest.mark.parametrize("group, allowed", [("provider", ()), ("catalog", ("ibm_boto3", "ibm_botocore"))])
def test_an_argument_spec_with_every_adapter_loads_no_cloud_sdk(group, allowed):
    # The catalog group's own adapter (bucket_catalog) is the S3 one: target modules read the bucket whatever the target.
    code = "from %s.module_utils import _module\n_module.argument_spec({}, %r)" % (PACKAGE, group)
    assert [m for m in loaded_after(code) if m not in allowed] == []


def test_the_probe_sees_an_sdk_the_adapter_loads():
    """The checks above could pass with a blind probe: the adapter itself does load its SDK."""
    assert {"ibm_vpc", "ibm_cloud_sdk_core"} <= set(loaded_after("from %s.module_utils import _ibm_vpc_client" % PACKAGE))


@pytest.mark.parametrize("module", ["run_lock", "job_progress", "host_slot", "run_dir", "qemu_convert", "powervc_export", "server_info", "snapshot",
                                    "snapshot_info", "volume_attach"])
def test_a_module_that_may_run_without_a_cloud_loads_no_sdk_until_it_needs_one(module):
    # run_lock and job_progress reach the bucket only for its lock (store bucket, bucket_heartbeat when due); qemu_convert
    # never: each is called many times per replication (job_progress at every poll), and the S3 SDK costs 0.5 s of CPU.
    assert loaded_after("import %s.modules.%s" % (PACKAGE, module)) == []
