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
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import uuid

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

# What the upload on the PowerVC host imports (ibm-cos-sdk and pycryptodome with their dependencies).
UPLOAD_PACKAGES = {"ibm_boto3", "ibm_botocore", "ibm_s3transfer", "Crypto", "jmespath", "dateutil", "six", "urllib3", "requests",
                   "charset_normalizer", "idna", "certifi", "cffi", "_cffi_backend", "pycparser", "typing_extensions", "distro"}


class PowerVCHost:
    def __init__(self, root, password, images=None, python=None):
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
            handle.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (python or sys.executable, script))
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


class HostUser:
    """A throwaway non-root login for the PowerVC host, with its home under /home; ``remove()`` deletes both.

    The pytest tmp dirs are private to root, so what the user must reach (its sshd's authorized_keys, the
    PowerVC files) lives in this home: ``give(path)`` hands a tree to the user.
    """

    def __init__(self):
        self.name = "pvc%s" % uuid.uuid4().hex[:8]
        self.home = os.path.join("/home", self.name)
        # Password "*": no password login, but not locked (sshd refuses keys of a locked account without PAM).
        subprocess.run(["useradd", "--create-home", "--home-dir", self.home, "--shell", "/bin/sh", "--password", "*", self.name],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def venv(self, python):
        """An upload venv the user can run: ``python``'s, with copies of the upload's packages from this process's venv."""
        path = os.path.join(self.home, "venv")
        if not os.path.exists(path):
            subprocess.run([python, "-m", "venv", "--without-pip", path], check=True, capture_output=True)
            done = subprocess.run([os.path.join(path, "bin", "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True)
            # Copies, not a .pth into this process's venv: the checkout may sit in a private (0700) directory the user
            # cannot read, as root's home does.
            target = done.stdout.strip()
            for source in sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}):
                for name in os.listdir(source):
                    if name.split(".")[0] in UPLOAD_PACKAGES and not name.endswith((".dist-info", ".pth")):
                        copy = shutil.copytree if os.path.isdir(os.path.join(source, name)) else shutil.copy2
                        copy(os.path.join(source, name), os.path.join(target, name))
            self.give(path)
        return path

    def give(self, path):
        for root, dirs, files in os.walk(path):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, self.uid, self.gid)

    def remove(self):
        """Delete the user and its home (stop what runs as the user first: its sshd's stop ends its sessions)."""
        subprocess.run(["userdel", "--remove", self.name], check=False, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)
