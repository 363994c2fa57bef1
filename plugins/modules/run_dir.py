#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: run_dir
short_description: Make or remove the private run directory of one replication, with the mark of its snapshot
version_added: 0.1.0
description:
  - Makes the directory that holds one run's image, sidecar and progress files on the conversion host (mode C(0700)),
    reads the mark a run left there to say that the snapshot it kept for resuming is the collection's own, and writes
    that mark for the snapshot this run took — in one call, where C(stat), C(file) and C(copy) would take four module
    runs on the host.
  - The mark is the file C(snapshot.owned) in the directory; it holds the snapshot's name. Only a snapshot named in
    it may be removed by a later run that reuses it (the snapshot of an operator never is).
  - O(state=absent) removes the directory and everything in it.
author:
  - vmimage.replication contributors (@vmimage)
attributes:
  check_mode:
    support: full
    description: In check mode the directory is neither made nor removed and no mark is written; RV(marked) is read all the same.
  diff_mode:
    support: none
    description: No difference is shown.
  idempotent:
    support: full
    description: Making a directory that exists, or removing one that does not, reports no change.
options:
  path:
    description: The run directory.
    type: path
    required: true
  state:
    description: Whether the directory is there (V(present)) or gone with all it holds (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  mark:
    description:
      - Name of the snapshot this run took, written as the directory's mark (after RV(marked) was read).
      - Only with O(state=present).
    type: str
"""

EXAMPLES = r"""
- name: Make the run directory; note the snapshot a kept run marked, and mark the one this run took
  vmimage.replication.run_dir:
    path: /var/tmp/vmimage-work/web01-20261129-101500
    mark: "{{ snapshot.snapshot.name if snapshot is changed else omit }}"
  register: run_dir

- name: Remove the run directory
  vmimage.replication.run_dir:
    path: /var/tmp/vmimage-work/web01-20261129-101500
    state: absent
"""

RETURN = r"""
path:
  description: The run directory.
  returned: always
  type: str
  sample: /var/tmp/vmimage-work/web01-20261129-101500
marked:
  description: The snapshot name the directory's mark held before this call; null when there was no mark.
  returned: when O(state=present)
  type: str
  sample: web01-20261129-101500
changed:
  description: Whether the directory was made, made private, marked or removed (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _run_dir
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    mark=dict(type="str"),
)


def _run(module):
    params = module.params
    if params["state"] == "absent":
        if params["mark"]:
            raise ReplicationError("Failed to remove the run directory %s: mark is for state=present; drop it" % params["path"])
        return dict(path=params["path"], changed=_run_dir.remove(params["path"], check_mode=module.check_mode))
    marked, changed = _run_dir.make(params["path"], mark=params["mark"], check_mode=module.check_mode)
    return dict(path=params["path"], marked=marked, changed=changed)


def main():
    ReplicationModule(OPTIONS, action="prepare the run directory").run(_run)


if __name__ == "__main__":
    main()
