#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: host_slot
short_description: Take or free one of the replication slots of a conversion host
version_added: 0.1.0
description:
  - Limits how many replications run at once on the conversion host the task runs on. A fleet spreads its servers
    over a pool of conversion hosts (role variable C(replication_conversion_hosts)); each host runs at most O(slots)
    of them at once and the others wait here, up to O(wait) seconds, for a slot.
  - A slot is the file C(<dir>/slots/<index>.slot), created atomically, naming the run that holds it by the path and
    the token of that run's lock (M(vmimage.replication.run_lock)). A slot is held only while that lock is held, so a run that
    ended, was killed, or whose lock went stale (older than O(stale_after)) frees its slot without any step of its own.
  - Freeing (O(state=absent)) removes only the slot this O(token) holds.
author:
  - vmimage.replication contributors (@vmimage)
attributes:
  check_mode:
    support: full
    description: In check mode it only counts the slots in use and says whether one is free.
  diff_mode:
    support: none
    description: No difference is shown.
  idempotent:
    support: full
    description: Taking a slot again with the token that holds one returns that slot and reports no change.
options:
  dir:
    description: Directory of the run locks on the conversion host (the role's C(work_dir)); the slots are in C(slots/) below it.
    type: path
    required: true
  slots:
    description: Number of replications this host runs at once. Required with O(state=present).
    type: int
  server:
    description: Name of the server the slot is for (shown to a run that finds every slot busy).
    type: str
  lock:
    description: Path of the server's run lock on this host (RV(vmimage.replication.run_lock#module:path)); required with O(state=present).
    type: path
  token:
    description: Token of the run, the one that holds O(lock).
    type: str
    required: true
  state:
    description: V(present) takes a slot, waiting for one; V(absent) frees the slot O(token) holds.
    type: str
    choices: [present, absent]
    default: present
  wait:
    description: Longest time to wait for a free slot, in seconds; then the task fails naming the servers that hold them.
    type: float
    default: 3600
  stale_after:
    description: A slot whose run lock has had no heartbeat for this many seconds is free (its run is gone).
    type: float
    default: 900
"""

EXAMPLES = r"""
- name: Take one of the two slots of the conversion host
  vmimage.replication.host_slot:
    dir: /var/tmp/vmimage-replication/work
    slots: 2
    server: web01
    lock: "{{ lock.path }}"
    token: "{{ lock.token }}"
  register: slot

- name: Free it
  vmimage.replication.host_slot:
    dir: /var/tmp/vmimage-replication/work
    token: "{{ lock.token }}"
    state: absent
"""

RETURN = r"""
slot:
  description: Index of the slot taken or freed; null when none was (every slot busy in check mode, or none held).
  returned: success
  type: int
  sample: 1
waited:
  description: Seconds spent waiting for a free slot.
  returned: success
  type: float
  sample: 42.5
busy:
  description: Servers whose runs hold a slot of this host after the task.
  returned: success
  type: list
  elements: str
  sample: [web01, db02]
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _host_slots
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    dir=dict(type="path", required=True),
    slots=dict(type="int"),
    server=dict(type="str"),
    lock=dict(type="path"),
    token=dict(type="str", required=True, no_log=False),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="float", default=3600.0),
    stale_after=dict(type="float", default=900.0),
)


def _busy(params):
    found = _host_slots.holders(params["dir"], max(params["slots"] or 0, 64), params["stale_after"])
    return sorted(record.get("server") or "?" for record in found.values())


def _run(module):
    params = module.params
    if params["state"] == "absent":
        held = _host_slots.held_by(params["dir"], params["token"])
        index = held if module.check_mode else _host_slots.release(params["dir"], params["token"])
        return dict(changed=index is not None, slot=index, waited=0.0, busy=_busy(params))
    if params["slots"] is None or params["slots"] < 1:
        raise ReplicationError("Failed to take a conversion host slot: slots must be 1 or more (got %s)" % params["slots"])
    if module.check_mode:
        held = _host_slots.held_by(params["dir"], params["token"])
        index = _host_slots.would_take(params["dir"], params["slots"], params["token"], params["stale_after"])
        return dict(changed=held is None and index is not None, slot=index, waited=0.0, busy=_busy(params))
    held = _host_slots.held_by(params["dir"], params["token"])
    index, waited = _host_slots.acquire(params["dir"], params["slots"], params["server"] or "?", params["lock"],
                                        params["token"], wait=params["wait"], stale_after=params["stale_after"])
    return dict(changed=held is None, slot=index, waited=waited, busy=_busy(params))


def main():
    ReplicationModule(OPTIONS, action="take a conversion host slot",
                      required_if=[("state", "present", ("slots", "lock", "server"))]).run(_run)


if __name__ == "__main__":
    main()
