# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The files of a PowerVC host for the tests: an rc file, the stand-in ``powervc-image`` and its behaviour file.

    host = PowerVCHost(tmp_path / "pvc", password="...")
    host.configure(fail="...", slow=2, columns=[...])   # change how powervc-image behaves
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

from tests.peers import powervc_image

IMAGE_ID = "5f0c2a9e-3b1d-4e7a-9c2f-8d1e6b4a7c30"
RC = """export OS_IDENTITY_API_VERSION=3
export OS_AUTH_URL=https://powervc.example:5000/v3/
export OS_REGION_NAME=RegionOne
export OS_PROJECT_DOMAIN_NAME=Default
export OS_PROJECT_NAME=ibm-default
export OS_TENANT_NAME=$OS_PROJECT_NAME
export OS_USER_DOMAIN_NAME=Default
export OS_USERNAME=root
export OS_COMPUTE_API_VERSION=2.46
"""


class PowerVCHost:
    def __init__(self, root, password, images=None):
        self.root = str(root)
        self.password = password
        os.makedirs(self.root, exist_ok=True)
        self.rc_file = os.path.join(self.root, "powervcrc")
        with open(self.rc_file, "w", encoding="utf-8") as handle:
            handle.write(RC)  # no OS_PASSWORD: the playbook gives it through the environment
        bindir = os.path.join(self.root, "bin")
        os.makedirs(bindir, exist_ok=True)
        script = os.path.join(bindir, "powervc_image.py")
        shutil.copyfile(powervc_image.__file__, script)
        self.command = os.path.join(bindir, "powervc-image")
        with open(self.command, "w", encoding="utf-8") as handle:
            handle.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (sys.executable, script))
        os.chmod(self.command, os.stat(self.command).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.config_path = os.path.join(bindir, "powervc-image.json")
        self.sessions = os.path.join(self.root, "sessions")
        os.makedirs(self.sessions, exist_ok=True)
        self.config = {"images": images or [
            {"name": "test-IMG", "id": IMAGE_ID, "status": "active", "size": 1, "exportable": True},
            {"name": "locked-IMG", "id": "0b9d3c1e-7f2a-4c8e-b1d6-3e5f7a9c2b40", "status": "active", "size": 1, "exportable": False},
        ], "password": password, "disk_mb": 8}
        self.configure()

    def configure(self, **changes):
        self.config.update(changes)
        with open(self.config_path, "w", encoding="utf-8") as handle:
            json.dump(self.config, handle)

    def calls(self):
        path = os.path.join(os.path.dirname(self.config_path), "calls.log")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle]
