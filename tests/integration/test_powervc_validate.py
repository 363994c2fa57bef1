# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""playbooks/powervc_import.yml validates the PowerVC host before it exports anything (the issue's step 1).

Each check fails with a message naming what to fix, in the validate phase, with nothing exported, no session
directory, upload or object left, and the workspace unchanged: the sessions directory, the upload venv (made when
powervc_host_prepare asks), the rc file (an override is really the one used), ``powervc-image list``, the image
(exists, exportable) and the free space for the image plus the margin. Same test bed as test_powervc_import.py.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.integration.test_powervc_import import PLAYBOOK, bed, pvc_ssh, pvc_user, pvs  # noqa: F401 pylint: disable=unused-import
from tests.peers.powervc_host import RC
from tests.peers.runner import run_playbook


def _failure(run):
    failures = [e["event_data"] for e in run.events if e.get("event") == "runner_on_failed" and not e["event_data"].get("ignore_errors")]
    return json.dumps([f.get("res", {}).get("msg") for f in failures])


def _stats(run):
    for event in run.events:
        if event.get("event") == "playbook_on_stats":
            return ((event.get("event_data") or {}).get("artifact_data") or {}).get("powervc_import") or {}
    return {}


def _nothing_done(bed):  # noqa: F811
    assert not [c for c in bed.host.calls() if c[0] == "export"], "exported before validating"
    assert not os.path.isdir(bed.host.sessions) or os.listdir(bed.host.sessions) == []
    assert bed.uploads() == [] and bed.objects() == [] and bed.ws.images == {}


def _broken_venv(bed):  # noqa: F811
    """A venv that runs but cannot import ibm_boto3 (no site-packages of the tests)."""
    path = os.path.join(bed.host.root, "bare-venv")
    os.makedirs(os.path.join(path, "bin"))
    os.symlink("/usr/bin/python3", os.path.join(path, "bin", "python"))
    return path


@pytest.mark.parametrize("case", ["no_sessions_dir", "no_venv", "venv_without_packages", "rc_override_wrong", "list_fails", "missing_image",
                                  "not_exportable", "no_space"])
def test_each_validation_fails_before_export_naming_the_fix(bed, case):  # noqa: F811
    extra, expected = {}, None
    if case == "no_sessions_dir":
        shutil.rmtree(bed.host.sessions)
        extra, expected = {}, ["sessions directory %s does not exist" % bed.host.sessions, "powervc_host_prepare=true"]
    elif case == "no_venv":
        extra, expected = dict(powervc_host_venv=os.path.join(bed.host.root, "no-venv")), ["cannot import ibm_boto3 and Crypto", "powervc_host_create_venv"]
    elif case == "venv_without_packages":
        extra, expected = dict(powervc_host_venv=_broken_venv(bed)), ["cannot import ibm_boto3 and Crypto", "No module named"]
    elif case == "rc_override_wrong":
        other = os.path.join(bed.host.root, "other-rc")
        with open(other, "w", encoding="utf-8") as handle:
            handle.write(RC.replace("export OS_AUTH_URL=https://powervc.example:5000/v3/\n", ""))
        extra, expected = dict(powervc_host_rc_file=other), ["rc file %s" % other, "does not set OS_AUTH_URL"]
    elif case == "list_fails":
        bed.host.configure(fail="Unable to establish connection to https://powervc.example:5000/v3/auth/tokens")
        extra, expected = {}, ["list", "Unable to establish connection"]
    elif case == "missing_image":
        extra, expected = dict(powervc_host_image="no-such-IMG"), ["Failed to find PowerVC image no-such-IMG", "test-IMG"]
    elif case == "not_exportable":
        extra, expected = dict(powervc_host_image="locked-IMG"), ["not exportable"]
    elif case == "no_space":
        extra, expected = dict(powervc_host_margin_mb=1 << 30), ["GiB free", "MiB margin"]
    run = bed.run(**extra)
    assert run.status == "failed"
    text = _failure(run)
    assert all(word in text for word in expected), text
    stats = _stats(run)
    assert stats.get("status") == "failed" and stats.get("phase", "").lower() == "validate", stats
    _nothing_done(bed)
    assert bed.s3.secret_access_key not in run.stdout + json.dumps(run.events)


def test_rc_file_override_is_the_one_used_and_prepare_makes_the_sessions_dir(bed, tmp_path):  # noqa: F811
    """PowerVC accepts only the account of the override rc file; the default rc file would be refused. Check mode: validate only."""
    other = os.path.join(bed.host.root, "admin-rc")
    with open(other, "w", encoding="utf-8") as handle:
        handle.write(RC.replace("OS_USERNAME=root", "OS_USERNAME=pvcadmin"))
    bed.host.configure(accept_user="pvcadmin")
    shutil.rmtree(bed.host.sessions)
    private = str(tmp_path / "runner-check")
    os.makedirs(private)
    extravars = bed.extravars(powervc_host_rc_file=other, powervc_host_prepare=True, powervc_host_create_venv=False)
    run = run_playbook(PLAYBOOK, bed.inventory, extravars=extravars, private_dir=private, cmdline="--check")
    assert run.status == "successful", run.stdout[-3000:]
    calls = [c[0] for c in bed.host.calls()]
    assert calls and set(calls) == {"list"}  # validated with the override's account, exported nothing
    assert not os.path.exists(bed.host.sessions)  # check mode made nothing
    refused = bed.run(powervc_host_rc_file=bed.host.rc_file, powervc_host_prepare=True, powervc_host_create_venv=False)  # another account
    assert refused.status == "failed" and "for user root" in _failure(refused)
    assert os.path.isdir(bed.host.sessions)  # powervc_host_prepare made the sessions directory before validating the rest
    _nothing_done(bed)
