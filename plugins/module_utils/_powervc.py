# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""PowerVC image export on the PowerVC host: ``powervc-image list`` / ``export -i IMAGE -p PATH`` with the rc file's environment.

The table of ``powervc-image list`` is read by its header names, never by column position, so a PowerVC
release that adds or reorders columns still reads right. The PowerVC password reaches ``powervc-image``
only through its environment (``OS_PASSWORD``), never a command line, and is masked in every message.
An export is written under a temporary name in the session directory, then renamed, with a sidecar
``<name>.ova.json`` (image id, size, sha256, export time): a second run in the same session finds it and
does not export again.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import subprocess

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._files import read_json, write_json

GIB = 1 << 30
# Reads the rc file in a shell (it is shell: exports, $OS_PROJECT_NAME) and prints the environment it makes, NUL-separated.
_RC_SHELL = 'set -a; . "$1" >/dev/null 2>&1 || exit 3; env -0'


def parse_table(text):
    """Rows of a ``+---+`` / ``| a | b |`` table as dicts keyed by its header cells."""
    rows = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if not rows:
        return []
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in rows]
    return [dict(zip(cells[0], row)) for row in cells[1:]]


def _truthy(value):
    return str(value).strip().lower() in ("true", "yes", "1")


class PowerVC:
    def __init__(self, rc_file, password=None, command="powervc-image", timeout=86400):
        self.rc_file, self.password, self.command, self.timeout = rc_file, password, command, timeout
        self._env = None

    def _mask(self, text):
        return text.replace(self.password, "********") if self.password and text else text

    def environment(self):
        """The environment the rc file makes (plus O(powervc_password) as OS_PASSWORD)."""
        if self._env is not None:
            return self._env
        if not os.path.isfile(self.rc_file):
            raise ReplicationError("Failed to read PowerVC rc file %s: it does not exist; set rc_file to the file that exports OS_AUTH_URL, OS_USERNAME..."
                                   % self.rc_file, rc_file=self.rc_file)
        done = subprocess.run(["/bin/bash", "-c", _RC_SHELL, "rc", self.rc_file], capture_output=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                              check=False, timeout=60)
        if done.returncode != 0:
            raise ReplicationError("Failed to read PowerVC rc file %s: the shell could not source it (exit %d); fix the file" % (self.rc_file, done.returncode),
                                   rc_file=self.rc_file)
        env = dict(item.split("=", 1) for item in done.stdout.decode("utf-8", "replace").split("\0") if "=" in item)
        missing = [name for name in ("OS_AUTH_URL", "OS_USERNAME") if not env.get(name)]
        if missing:
            raise ReplicationError("Failed to read PowerVC rc file %s: it does not set %s; is it a PowerVC rc file (powervcrc)?"
                                   % (self.rc_file, ", ".join(missing)),
                                   rc_file=self.rc_file)
        if self.password:
            env["OS_PASSWORD"] = self.password
        env.setdefault("PATH", os.environ.get("PATH", "/usr/bin:/bin"))
        self._env = env
        return env

    def run(self, *args, timeout=None):
        env = self.environment()
        try:
            done = subprocess.run([self.command, *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False,
                                  timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise ReplicationError("Failed to run %s: not found on this host; install PowerVC's CLI or set powervc_command" % self.command) from None
        except subprocess.TimeoutExpired:
            raise ReplicationError("Failed to run %s %s: no answer after %ss; raise timeout" % (self.command, args[0], timeout or self.timeout)) from None
        if done.returncode != 0:
            detail = self._mask((done.stderr or done.stdout).strip()[-800:])
            raise ReplicationError("Failed to run %s %s: exit %d: %s" % (self.command, args[0], done.returncode, detail), rc=done.returncode)
        return done.stdout

    def images(self):
        rows = parse_table(self.run("list", timeout=600))
        if rows and not {"Name", "ID"} <= set(rows[0]):
            raise ReplicationError("Failed to read the output of %s list: no Name and ID columns (found %s)" % (self.command, ", ".join(rows[0])))
        return rows

    def find(self, image):
        rows = self.images()
        found = [r for r in rows if image in (r.get("ID"), r.get("Name"))]
        if not found:
            raise ReplicationError("Failed to find PowerVC image %s: %s list shows %s; set image to one of them"
                                   % (image, self.command, ", ".join(r.get("Name", "?") for r in rows) or "no image"), image=image)
        if len(found) > 1:
            raise ReplicationError("Failed to find PowerVC image %s: %d images have that name; give its ID (%s)"
                                   % (image, len(found), ", ".join(r.get("ID", "?") for r in found)), image=image)
        row = found[0]
        if "Exportable" in row and not _truthy(row["Exportable"]):
            raise ReplicationError("Failed to export PowerVC image %s: PowerVC says it is not exportable; choose an exportable image" % image, image=image)
        if row.get("Status") and row["Status"].lower() != "active":
            raise ReplicationError("Failed to export PowerVC image %s: its status is %s, not active; wait until it is active" % (image, row["Status"]),
                                   image=image)
        return row


def image_facts(row):
    try:
        size_gb = float(row.get("Size") or 0)
    except ValueError:
        size_gb = 0.0
    return {"name": row.get("Name"), "id": row.get("ID"), "status": row.get("Status"), "size_gb": size_gb,
            "os_distro": row.get("OS Distro"), "architecture": row.get("Architecture"), "exportable": _truthy(row.get("Exportable", "True"))}


def check_space(directory, size_gb, margin_mb):
    """Raise unless the file system of ``directory`` (or its nearest existing parent) has room for the image plus the margin."""
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize
    need = int(size_gb * GIB) + margin_mb * (1 << 20)
    if free < need:
        raise ReplicationError("Failed to export: %s has %.1f GiB free, the image needs %.1f GiB plus a %d MiB margin; "
                               "free space or choose another sessions directory"
                               % (probe, free / GIB, size_gb, margin_mb), free=free, needed=need)
    return free


def sha256_file(path, block=8 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(powervc, image, session_dir, name, margin_mb=1024, check_mode=False, now=None):
    """Validate and export: ``{changed, path, size, sha256, export_time, image, session_dir}``."""
    row = powervc.find(image)
    facts = image_facts(row)
    path = os.path.join(session_dir, "%s.ova" % name)
    sidecar = path + ".json"
    known = read_json(sidecar) if os.path.exists(sidecar) else None
    if known and known.get("image_id") == facts["id"] and os.path.exists(path) and os.path.getsize(path) == known.get("size"):
        return dict(changed=False, path=path, size=known["size"], sha256=known["sha256"], export_time=known["export_time"], image=facts,
                    session_dir=session_dir)
    check_space(session_dir, facts["size_gb"], margin_mb)
    export_time = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if check_mode:
        return dict(changed=True, path=path, size=None, sha256=None, export_time=export_time, image=facts, session_dir=session_dir)
    os.makedirs(session_dir, mode=0o700, exist_ok=True)
    partial_dir = os.path.join(session_dir, ".export")
    shutil.rmtree(partial_dir, ignore_errors=True)
    os.makedirs(partial_dir, mode=0o700)
    partial = os.path.join(partial_dir, "%s.ova" % name)
    try:
        powervc.run("export", "-i", facts["id"] or image, "-p", partial)
        if not os.path.isfile(partial):
            raise ReplicationError("Failed to export PowerVC image %s: %s export wrote no file at %s" % (image, powervc.command, partial))
        digest, size = sha256_file(partial), os.path.getsize(partial)
        os.replace(partial, path)
    finally:
        shutil.rmtree(partial_dir, ignore_errors=True)
    write_json(sidecar, {"image_id": facts["id"], "image": facts["name"], "size": size, "sha256": digest, "export_time": export_time})
    return dict(changed=True, path=path, size=size, sha256=digest, export_time=export_time, image=facts, session_dir=session_dir)


def remove_session(session_dir, check_mode=False):
    """Remove the session directory and all in it; ``changed`` when it was there."""
    if not os.path.lexists(session_dir):
        return dict(changed=False, session_dir=session_dir)
    if not check_mode:
        shutil.rmtree(session_dir)
    return dict(changed=True, session_dir=session_dir)
