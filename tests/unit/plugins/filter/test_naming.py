"""The naming filters, called directly and through a real templar."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ansible.errors import AnsibleError

from ansible_collections.vmimage.replication.plugins.filter import naming


def test_filters_directly():
    assert naming.image_name("web01", "2026-03-10T13:00:00+01:00") == "web01-20260310-120000"
    assert naming.object_key("web01", "2026-03-10T12:00:00Z") == "images/web01/web01-20260310-120000.qcow2"
    assert naming.object_key("db.x", "20260310-120000", format="ova", prefix="dr") == "dr/db.x/db.x-20260310-120000.ova"
    assert naming.latest_name("web-01") == "web-01-latest"
    assert set(naming.FilterModule().filters()) == {"image_name", "object_key", "latest_name"}


@pytest.mark.parametrize("call", [
    lambda: naming.image_name("web01", "2026-03-10T12:00:00"),
    lambda: naming.object_key("a/b", "2026-03-10T12:00:00Z"),
    lambda: naming.latest_name(""),
])
def test_filters_fail_clearly(call):
    with pytest.raises(AnsibleError):
        call()


def test_filters_in_a_playbook_template():
    """Through real ansible: the filters resolve by their FQCN from the collection path conftest sets."""
    venv_bin = os.path.dirname(sys.executable)
    expr = "{{ 'web01' | vmimage.replication.object_key(t, format='raw') }} {{ 'web01' | vmimage.replication.latest_name }}"
    proc = subprocess.run(
        [os.path.join(venv_bin, "ansible"), "localhost", "-c", "local", "-m", "ansible.builtin.debug", "-a", "msg=\"%s\"" % expr,
         "-e", "t=2026-03-10T12:00:00Z", "-e", "ansible_python_interpreter=%s" % sys.executable],
        capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "images/web01/web01-20260310-120000.raw web01-latest" in proc.stdout
