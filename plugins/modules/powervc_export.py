#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: powervc_export
short_description: Export a PowerVC image to an OVA in a private session directory on the PowerVC host
version_added: 0.1.0
description:
  - Runs on the PowerVC host. Sources the rc file O(rc_file) for PowerVC's environment, finds O(image) in
    C(powervc-image list) (read by its column names, not positions), checks that it is active and exportable and that
    the session directory has room for it plus O(margin_mb), then runs C(powervc-image export -i <id> -p <session dir>/<name>.ova).
  - The export is written under a temporary name and renamed when complete; its sha256, size and export time are kept beside
    it, so a second run in the same session directory returns the same OVA without exporting again.
  - The export time (UTC) names the image in the target (C(<image>-<YYYYMMDD-HHMMSS>)).
  - With O(state=absent), removes the session directory and all in it (the cleanup of a run, successful or not).
  - The PowerVC password (O(powervc_password), else the rc file's C(OS_PASSWORD)) reaches C(powervc-image) only through its
    environment; it is never on a command line, in a message or in the result.
author:
  - vmimage.replication contributors (@vmimage)
options:
  image:
    description: Name or ID of the PowerVC image. Required with O(state=present).
    type: str
  rc_file:
    description: The PowerVC rc file (shell exports of C(OS_AUTH_URL), C(OS_USERNAME)...).
    type: path
    default: /opt/ibm/powervc/powervcrc
  powervc_password:
    description: PowerVC password, given to C(powervc-image) as C(OS_PASSWORD) in its environment; overrides the rc file's.
    type: str
  session_dir:
    description: Private directory of this run (created with mode 0700), for example C(/home/sessions/<run id>).
    type: path
    required: true
  name:
    description: File name of the OVA without C(.ova); defaults to O(image).
    type: str
  margin_mb:
    description: Free space required in the session directory beyond the image's size, in MiB.
    type: int
    default: 1024
  powervc_command:
    description: The C(powervc-image) command.
    type: str
    default: powervc-image
  timeout:
    description: Longest time an export may take, in seconds.
    type: int
    default: 86400
  state:
    description: V(present) exports; V(absent) removes O(session_dir).
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: Validates the rc file, the image and the free space, and says whether it would export; writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: An OVA already exported in the session directory is returned as it is.
seealso:
  - module: vmimage.replication.cos_upload
  - module: vmimage.replication.pvs_import
"""

EXAMPLES = r"""
- name: Export test-IMG
  vmimage.replication.powervc_export:
    image: test-IMG
    session_dir: /home/sessions/{{ run_id }}
    powervc_password: "{{ powervc_password }}"
  register: ova

- name: Remove the session directory
  vmimage.replication.powervc_export:
    session_dir: /home/sessions/{{ run_id }}
    state: absent
"""

RETURN = r"""
changed:
  description: Whether an export ran (or would run), or the session directory was removed.
  returned: always
  type: bool
  sample: true
path:
  description: Path of the OVA.
  returned: state=present
  type: str
  sample: /home/sessions/3f2a/test-IMG.ova
size:
  description: Size of the OVA in bytes; null in check mode before an export.
  returned: state=present
  type: int
  sample: 10737428480
sha256:
  description: sha256 of the OVA; null in check mode before an export.
  returned: state=present
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
export_time:
  description: UTC time of the export, which names the image in the target.
  returned: state=present
  type: str
  sample: "2026-03-10T12:00:00Z"
image:
  description: The image as C(powervc-image list) shows it.
  returned: state=present
  type: dict
  sample: {name: test-IMG, id: 7d4c1f0e-0b8a-4c1e-9c52-2b0c5b1f3a10, status: active, size_gb: 10, os_distro: rhel, architecture: ppc64, exportable: true}
session_dir:
  description: The session directory.
  returned: always
  type: str
  sample: /home/sessions/3f2a
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _powervc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    if p["state"] == "absent":
        return _powervc.remove_session(p["session_dir"], check_mode=module.check_mode)
    if not p["image"]:
        raise ReplicationError("Failed to export: image is required with state=present")
    powervc = _powervc.PowerVC(p["rc_file"], p["powervc_password"], p["powervc_command"], p["timeout"])
    return _powervc.export(powervc, p["image"], p["session_dir"], p["name"] or p["image"], p["margin_mb"], check_mode=module.check_mode)


def main():
    spec = dict(
        image=dict(type="str"),
        rc_file=dict(type="path", default="/opt/ibm/powervc/powervcrc"),
        powervc_password=dict(type="str", no_log=True),
        session_dir=dict(type="path", required=True),
        name=dict(type="str"),
        margin_mb=dict(type="int", default=1024),
        powervc_command=dict(type="str", default="powervc-image"),
        timeout=dict(type="int", default=86400),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    module = ReplicationModule(spec, action="export PowerVC image")
    module.run(run)


if __name__ == "__main__":
    main()
