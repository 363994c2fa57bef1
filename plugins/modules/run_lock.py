#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: Hold the one-run-per-server lock on the host where the run's state lives
version_added: 0.1.0
description:
  - Takes or releases the lock file C(<dir>/<server>.lock) on the host the task runs on (the
    conversion host, where the snapshot, the run directory and the spool live), so that only one
    run replicates a server at a time, whatever the number of controllers that share that host.
  - The lock file holds the owner O(token), the controller host, its pid and the start time; its
    modification time is the heartbeat, touched again by M(vmimage.replication.job_progress) when
    given the lock as O(vmimage.replication.job_progress#module:heartbeat_file).
  - A lock whose heartbeat is older than O(stale_after) seconds belongs to a run that is gone and is
    taken over.
  - When another run holds the lock, waits up to O(wait) seconds for it, then fails with a message
    naming that run and the option to raise. Releasing only ever removes a lock this O(token) holds.
author:
  - vmimage.replication contributors (@vmimage)
attributes:
  check_mode:
    support: full
    description: In check mode it only reads the lock and says whether it would be taken or released.
  diff_mode:
    support: none
    description: No difference is shown.
  idempotent:
    support: full
    description: Taking a lock this token already holds only touches its heartbeat and reports no change.
options:
  server:
    description: Name of the server the lock is for; the lock file is C(<dir>/<server>.lock).
    type: str
    required: true
  dir:
    description: Directory of the lock file, created when missing (the role's C(work_dir)).
    type: path
    required: true
  token:
    description:
      - Owner token of this run. When unset with O(state=present), a new one is made and returned as RV(token).
      - Required with O(state=absent).
    type: str
  state:
    description: V(present) takes the lock, V(absent) releases it when O(token) holds it.
    type: str
    choices: [present, absent]
    default: present
  wait:
    description: Longest time to wait for another run's lock to be released, in seconds; V(0) fails at once.
    type: float
    default: 0
  stale_after:
    description: A lock whose heartbeat is older than this many seconds is taken over.
    type: float
    default: 900
  controller:
    description: Name of the controller host recorded in the lock (shown to a run that finds it held).
    type: str
"""

EXAMPLES = r"""
- name: Take the lock of web01 (fail at once when another run holds it)
  vmimage.replication.run_lock:
    server: web01
    dir: /var/tmp/vmimage-replication/work
    controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
  register: lock

- name: Release it
  vmimage.replication.run_lock:
    server: web01
    dir: /var/tmp/vmimage-replication/work
    token: "{{ lock.token }}"
    state: absent
"""

RETURN = r"""
token:
  description: Owner token of the lock taken (or given).
  returned: success
  type: str
  sample: 6f1c0d1e3b1a4ad0b0f9f3f0b7c1e2aa
path:
  description: Path of the lock file.
  returned: success
  type: str
  sample: /var/tmp/vmimage-replication/work/web01.lock
holder:
  description: The lock's record (token, host, pid, started, age) after the task; empty when no run holds it.
  returned: success
  type: dict
  sample: {token: 6f1c0d1e3b1a4ad0b0f9f3f0b7c1e2aa, host: awx-1, pid: 4242, started: 1795310000.5, age: 0.0}
"""

import os

from ansible_collections.vmimage.replication.plugins.module_utils import _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    server=dict(type="str", required=True),
    dir=dict(type="path", required=True),
    token=dict(type="str", no_log=False),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="float", default=0.0),
    stale_after=dict(type="float", default=900.0),
    controller=dict(type="str"),
)


def _run(module):
    params = module.params
    server, directory = params["server"], params["dir"]
    path = _run_lock.lock_path(directory, server)
    token = params["token"]
    if params["state"] == "absent":
        if not token:
            raise ReplicationError("Failed to release the lock of %s: token is required with state=absent" % server)
        holder = _run_lock.read(path) or {}
        mine = holder.get("token") == token
        changed = mine if module.check_mode else _run_lock.release(directory, server, token)
        return dict(changed=changed, token=token, path=path, holder={} if changed else holder)
    token = token or _run_lock.new_token()
    if module.check_mode:
        holder = _run_lock.read(path) or {}
        free = not holder or holder.get("token") == token or holder["age"] > params["stale_after"]
        if not free:
            raise ReplicationError("Failed to start replicating %s: another %s holds its lock %s"
                                   % (server, _run_lock.describe(holder), path), server=server, lock=path)
        return dict(changed=holder.get("token") != token, token=token, path=path, holder=holder)
    changed, holder = _run_lock.acquire(directory, server, token, stale_after=params["stale_after"], wait=params["wait"],
                                        controller=params["controller"], pid=os.getppid())
    return dict(changed=changed, token=token, path=path, holder=holder)


def main():
    ReplicationModule(OPTIONS, action="lock the server").run(_run)


if __name__ == "__main__":
    main()
