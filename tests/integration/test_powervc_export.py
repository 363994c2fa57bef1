# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""powervc_export against the stand-in powervc-image: the table read by header names, idempotent per session, failures named."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from tests.emulators.powervs import check_ova
from tests.peers.powervc_host import IMAGE_ID, PowerVCHost

PASSWORD = "pvcPassw0rd-Zq8LmX3"


@pytest.fixture
def host(tmp_path):
    return PowerVCHost(tmp_path / "pvc", PASSWORD)


def args(host, **extra):
    value = dict(image="test-IMG", rc_file=host.rc_file, powervc_password=PASSWORD, session_dir=os.path.join(host.sessions, "run1"),
                 powervc_command=host.command, margin_mb=1)
    value.update(extra)
    return value


def test_check_mode_real_idempotent_and_cleanup(host, module_runner, tmp_path):
    check = module_runner("powervc_export", args(host), check_mode=True)
    assert check["changed"] and check["image"]["id"] == IMAGE_ID and not os.path.exists(args(host)["session_dir"])
    first = module_runner("powervc_export", args(host))
    assert first["changed"] and first["path"].endswith("/run1/test-IMG.ova") and first["size"] == os.path.getsize(first["path"])
    assert oct(os.stat(first["session_dir"]).st_mode & 0o777) == "0o700"
    check_ova(first["path"], str(tmp_path))  # a real OVA: tar, OVF descriptor, a disk qemu-img reads
    second = module_runner("powervc_export", args(host))
    assert not second["changed"] and second["sha256"] == first["sha256"] and second["export_time"] == first["export_time"]
    exports = [c for c in host.calls() if c[0] == "export"]
    assert len(exports) == 1 and exports[0][:3] == ["export", "-i", IMAGE_ID]
    assert all(PASSWORD not in " ".join(c) for c in host.calls()) and PASSWORD not in json.dumps([check, first, second])
    gone = module_runner("powervc_export", dict(session_dir=first["session_dir"], state="absent"))
    assert gone["changed"] and not os.path.exists(first["session_dir"])
    assert not module_runner("powervc_export", dict(session_dir=first["session_dir"], state="absent"))["changed"]


def test_columns_in_another_order_still_read(host, module_runner):
    host.configure(columns=["ID", "Exportable", "Size", "Status", "Name", "OS Distro", "Description", "Volumes", "Architecture"])
    result = module_runner("powervc_export", args(host), check_mode=True)
    assert result["image"] == {"name": "test-IMG", "id": IMAGE_ID, "status": "active", "size_gb": 1.0, "os_distro": "rhel",
                               "architecture": "ppc64", "exportable": True}


@pytest.mark.parametrize("case", ["no_rc", "wrong_rc", "not_exportable", "missing_image", "no_space", "wrong_password", "export_fails"])
def test_bad_input_names_what_to_fix(host, module_runner, case, tmp_path):
    extra, expected = {}, None
    if case == "no_rc":
        extra, expected = dict(rc_file=str(tmp_path / "nope")), "does not exist; set rc_file"
    elif case == "wrong_rc":
        bad = tmp_path / "other.rc"
        bad.write_text("export FOO=bar\n")
        extra, expected = dict(rc_file=str(bad)), "does not set OS_AUTH_URL, OS_USERNAME"
    elif case == "not_exportable":
        extra, expected = dict(image="locked-IMG"), "not exportable"
    elif case == "missing_image":
        extra, expected = dict(image="nope-IMG"), "shows test-IMG, locked-IMG"
    elif case == "no_space":
        extra, expected = dict(margin_mb=1 << 30), "GiB free"
    elif case == "wrong_password":
        extra, expected = dict(powervc_password="wrong-" + PASSWORD), "HTTP 401"
    elif case == "export_fails":
        host.configure(fail="Error exporting image: volume backend unavailable (%s)" % PASSWORD)
        expected = "volume backend unavailable (********)"
    result = module_runner("powervc_export", args(host, **extra))
    assert result["failed"] and expected in result["msg"], result["msg"]
    assert not os.path.exists(args(host)["session_dir"])
    assert PASSWORD not in json.dumps(result)


def test_rc_file_override_is_really_used(host, module_runner, tmp_path):
    other = tmp_path / "custom-powervcrc"
    other.write_text(open(host.rc_file).read().replace("OS_USERNAME=root", "OS_USERNAME="))
    result = module_runner("powervc_export", args(host, rc_file=str(other)), check_mode=True)
    assert result["failed"] and str(other) in result["msg"]


def test_no_password_on_any_command_line_while_exporting(host, module_runner):
    host.configure(slow=1.5)
    seen = []

    def watch():
        for _unused in range(30):
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
            seen.append(PASSWORD in out)
            if any(seen):
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    result = module_runner("powervc_export", args(host))
    watcher.join()
    assert result["changed"] and not any(seen)
