#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: Hold the one-run-per-server lock where the run's state lives (conversion host or bucket)
version_added: 0.1.0
description:
  - Takes or releases the lock file C(<dir>/<server>.lock) on the host the task runs on (the
    conversion host, where the snapshot, the run directory and the spool live), so that only one
    run replicates a server at a time, whatever the number of controllers that share that host.
  - That is O(store=host), the default. With O(store=bucket) it is an
    object in the bucket the run uses (C(<prefix><server>/.lock)), which every controller that replicates into that
    bucket sees, for example two AWX execution nodes each with its own conversion host.
  - O(store=both) takes the bucket lock, then the host lock with the same token, in one task. The role does so for a
    cloud provider, where the bucket lock keeps other controllers out and the host lock's file is the heartbeat a stage's
    watchdog reads. When the host lock cannot be taken, the bucket lock this task took is released before it fails;
    releasing frees both.
  - The lock file holds the owner O(token), the controller host, its pid and the start time; its
    modification time is the heartbeat, touched again by M(vmimage.replication.job_progress) when
    given the lock as O(vmimage.replication.job_progress#module:heartbeat_file).
  - A lock whose heartbeat is older than O(stale_after) seconds belongs to a run that is gone and is
    taken over.
  - When another run holds the lock, waits up to O(wait) seconds for it, then fails with a message
    naming that run and the option to raise. Releasing only ever removes a lock this O(token) holds.
  - In the bucket, the lock is created with a conditional write (header C(If-None-Match) set to C(*)) where the endpoint honours it
    (AWS S3, SeaweedFS); elsewhere (rclone serve s3) takers follow a claims protocol (Lamport's bakery over uniquely
    named claim objects under C(<prefix><server>/.lock.claims/)). Ages are measured on the endpoint's clock. Its
    heartbeat is sent by M(vmimage.replication.job_progress) (O(vmimage.replication.job_progress#module:bucket_heartbeat)).
extends_documentation_fragment:
  - vmimage.replication.cos
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
    description:
      - Directory of the lock file, created when missing (the role's C(work_dir)).
      - Required with O(store=host) and O(store=both).
    type: path
  store:
    description:
      - Where the lock lives. V(host) is a file in O(dir) on the host the task runs on; V(bucket) is an object in
        O(bucket), reached with O(cos); V(both) is the bucket lock and the host lock, with one token.
    type: str
    choices: [host, bucket, both]
    default: host
  cos:
    description:
      - Connection to the object storage holding O(bucket). Required with O(store=bucket) and O(store=both); unused with
        O(store=host).
    type: dict
    required: false
  bucket:
    description: Bucket of the lock object, with O(store=bucket) or O(store=both) (the bucket the run uploads to).
    type: str
  prefix:
    description: Key prefix of the server's objects in O(bucket); the lock is C(<prefix><server>/.lock).
    type: str
    default: ''
  protocol:
    description:
      - How a lock object is taken with O(store=bucket). V(auto) probes whether the endpoint honours conditional
        writes and uses V(conditional) when it does, else V(claims). Every controller must find the same answer,
        which a given endpoint gives; each protocol also sees locks the other took.
    type: str
    choices: [auto, conditional, claims]
    default: auto
  token:
    description:
      - Owner token of this run. When unset with O(state=present), a new one is made and returned as RV(token).
      - Required with O(state=absent).
    type: str
  state:
    description: V(present) takes the lock, V(absent) releases it (with O(store=both), each of the two) when O(token) holds it.
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
  slots:
    description:
      - With O(store=host) or O(store=both) and O(state=present), also take one of this many slots of the conversion host
        once the lock is held, as M(vmimage.replication.host_slot) does (at most this many replications at once on the
        host; the slot lives as long as the lock). V(0) takes none.
      - When no slot is free within O(slot_wait), the locks this task took are released before it fails.
      - With O(state=absent) the slot the O(token) holds is freed first, whatever this option says.
    type: int
    default: 0
  slot_wait:
    description:
      - Longest time to wait for a free slot, in seconds; then the task fails naming the servers that hold them.
      - With O(store=both), the wait refreshes the bucket lock every quarter of O(stale_after), and fails at once, naming
        it, when the lock went stale or another run took it over.
    type: float
    default: 3600
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

- name: Take the lock of web01 in the bucket, seen by every controller (wait up to 10 minutes)
  vmimage.replication.run_lock:
    server: web01
    store: bucket
    cos: "{{ cos }}"
    bucket: dr-images
    prefix: images/
    wait: 600
  register: bucket_lock

- name: Take both, the bucket's and the conversion host's, in one task
  vmimage.replication.run_lock:
    server: web01
    store: both
    dir: /var/tmp/vmimage-replication/work
    cos: "{{ cos }}"
    bucket: dr-images
    prefix: images/
  register: lock
"""

RETURN = r"""
token:
  description: Owner token of the lock taken (or given).
  returned: success
  type: str
  sample: 6f1c0d1e3b1a4ad0b0f9f3f0b7c1e2aa
path:
  description: Path of the lock file (with O(store=both) too), or C(s3://<bucket>/<key>) of the lock object with O(store=bucket).
  returned: success
  type: str
  sample: /var/tmp/vmimage-replication/work/web01.lock
object:
  description: C(s3://<bucket>/<key>) of the lock object with O(store=bucket) or O(store=both); empty with O(store=host).
  returned: success
  type: str
  sample: s3://dr-images/images/web01/.lock
store:
  description: Where the lock lives, O(store).
  returned: success
  type: str
  sample: host
protocol:
  description: With O(store=bucket) or O(store=both), the protocol used (V(conditional) or V(claims)); empty with O(store=host).
  returned: success
  type: str
  sample: conditional
holder:
  description:
    - The lock's record (token, host, pid, started, age) after the task; empty when no run holds it.
    - With O(store=both), the host lock's record.
  returned: success
  type: dict
  sample: {token: 6f1c0d1e3b1a4ad0b0f9f3f0b7c1e2aa, host: awx-1, pid: 4242, started: 1795310000.5, age: 0.0}
slot:
  description: Index of the conversion host slot taken or freed (O(slots)); null when none was.
  returned: with O(store=host) or O(store=both)
  type: int
  sample: 1
slot_waited:
  description: Seconds spent waiting for a free slot.
  returned: with O(store=host) or O(store=both)
  type: float
  sample: 42.5
bucket_holder:
  description: With O(store=both), the bucket lock's record after the task; empty when no run holds it.
  returned: when O(store=both)
  type: dict
  sample: {token: 6f1c0d1e3b1a4ad0b0f9f3f0b7c1e2aa, host: awx-1, pid: 4242, started: 1795310000.5, age: 0.0}
"""

import copy
import os
import socket
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _host_slots, _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import COS_SPEC, ReplicationModule

OPTIONS = dict(
    server=dict(type="str", required=True),
    dir=dict(type="path"),
    store=dict(type="str", choices=["host", "bucket", "both"], default="host"),
    # Only the bucket lock needs object storage: the shared cos options, not required here.
    cos=dict(copy.deepcopy(COS_SPEC["cos"]), required=False),
    bucket=dict(type="str"),
    prefix=dict(type="str", default=""),
    protocol=dict(type="str", choices=["auto", "conditional", "claims"], default="auto"),
    token=dict(type="str", no_log=False),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    wait=dict(type="float", default=0.0),
    stale_after=dict(type="float", default=900.0),
    controller=dict(type="str"),
    slots=dict(type="int", default=0),
    slot_wait=dict(type="float", default=3600.0),
)


def _host(module, token, state):
    params = module.params
    server, directory = params["server"], params["dir"]
    path = _run_lock.lock_path(directory, server)
    if state == "absent":
        holder = _run_lock.read(path) or {}
        mine = holder.get("token") == token
        changed = mine if module.check_mode else _run_lock.release(directory, server, token)
        return dict(changed=changed, token=token, path=path, holder={} if changed else holder)
    if module.check_mode:
        holder = _run_lock.read(path) or {}
        free = not holder or holder.get("token") == token or holder["age"] > params["stale_after"]
        if not free:
            raise _run_lock.held_error(server, holder, path, params["wait"], params["stale_after"])
        return dict(changed=holder.get("token") != token, token=token, path=path, holder=holder)
    changed, holder = _run_lock.acquire(directory, server, token, stale_after=params["stale_after"], wait=params["wait"],
                                        controller=params["controller"], pid=os.getppid())
    return dict(changed=changed, token=token, path=path, holder=holder)


def _public(holder):
    """The holder's record as returned: no ETag, no object key."""
    return {name: value for name, value in (holder or {}).items() if name not in ("etag", "key")}


def _bucket(module, token, state):
    # The S3 SDK only for the bucket store: a host lock (the local provider) does not pay for it.
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos
    params = module.params
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    cos, bucket, server, stale_after = params["cos"], params["bucket"], params["server"], params["stale_after"]
    key = _bucket_lock.lock_key(params["prefix"], server)
    where = "s3://%s/%s" % (bucket, key)
    result = dict(token=token, path=where, protocol="")
    with _cos.naming_errors("lock server %s with" % server, cos, bucket, key):
        client = _cos.connect(cos)
        _cos.check_bucket(client, cos, bucket)
        holder = _bucket_lock.holder(client, bucket, key, stale_after)
        if state == "absent":
            mine = (holder or {}).get("token") == token
            changed = mine if module.check_mode else _bucket_lock.release(client, bucket, key, token)
            return dict(result, changed=changed, holder={} if changed else _public(holder))
        if module.check_mode:
            if holder is not None and holder.get("token") != token:
                raise _run_lock.held_error(server, holder, where, params["wait"], stale_after)
            return dict(result, changed=holder is None, holder=_public(holder))
        protocol = params["protocol"]
        if protocol == "auto":
            protocol = _bucket_lock.detect_mode(client, bucket, key, token)
        now = time.time()
        record = dict(token=token, host=params["controller"] or socket.gethostname(), pid=os.getppid(), started=now, heartbeat=now,
                      server=server)
        changed, holder = _bucket_lock.acquire(client, bucket, key, record, stale_after, params["wait"], protocol)
    if holder.get("token") != token:
        # Held past the wait: fail naming the holder, having touched none of its objects.
        raise _run_lock.held_error(server, holder, where, params["wait"], stale_after)
    return dict(result, changed=changed, protocol=protocol, holder=_public(holder))


def _both(module, token, state):
    """The bucket lock, then the host lock with the same token; released host first, then bucket, each tried."""
    if state == "absent":
        outcomes, errors = [], []
        for step in (_host, _bucket):
            try:
                outcomes.append(step(module, token, state))
            except ReplicationError as error:
                errors.append(error)
        if errors:
            raise errors[0]
        host, bucket = outcomes
    else:
        bucket = _bucket(module, token, state)
        try:
            host = _host(module, token, state)
        except ReplicationError:
            # Fail having taken nothing: the bucket lock this task took goes back.
            if bucket["changed"] and not module.check_mode:
                _bucket(module, token, "absent")
            raise
    return dict(host, changed=host["changed"] or bucket["changed"], object=bucket["path"], protocol=bucket["protocol"],
                bucket_holder=bucket["holder"])


def _bucket_beat(module, token, protocol):
    """Refresh the bucket lock ``token`` holds (a long wait for a slot must not let it go stale)."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos
    params = module.params
    key = _bucket_lock.lock_key(params["prefix"], params["server"])
    with _cos.naming_errors("keep the lock of server %s in" % params["server"], params["cos"], params["bucket"], key):
        kept = _bucket_lock.heartbeat(_cos.connect(params["cos"]), params["bucket"], key, token, protocol, stale_after=params["stale_after"])
    if not kept:
        # Waiting on would end in a run that believes it holds a lock another controller may now hold.
        raise ReplicationError("Failed to keep the lock of server %s in bucket %s while waiting for a conversion host slot: it went stale "
                               "or another run took it over (replication_lock_stale_after %ss); run again"
                               % (params["server"], params["bucket"], params["stale_after"]), server=params["server"])


def _take_slot(module, token, locked):
    """(index, seconds waited) of the slot taken for the run that holds ``locked`` (check mode: the one it would take)."""
    params = module.params
    directory = params["dir"]
    if module.check_mode:
        return _host_slots.would_take(directory, params["slots"], token, params["stale_after"]), 0.0
    held = _host_slots.held_by(directory, token)
    if held is not None:
        return held, 0.0
    # With the bucket lock too, a long wait refreshes it every quarter of stale_after (the host lock's heartbeat is kept by
    # the wait itself): a claim older than half of it counts as lost, and servers date objects to the second.
    keepalive = (lambda: _bucket_beat(module, token, locked["protocol"])) if params["store"] == "both" else None
    return _host_slots.acquire(directory, params["slots"], params["server"], locked["path"], token, wait=params["slot_wait"],
                               stale_after=params["stale_after"], keepalive=keepalive, keepalive_every=params["stale_after"] / 4)


def _locks(module, token, state):
    store = module.params["store"]
    if store == "both":
        return _both(module, token, state)
    if store == "bucket":
        result = _bucket(module, token, state)
        return dict(result, object=result["path"])
    return dict(_host(module, token, state), object="", protocol="")


def _run(module):
    params = module.params
    state, store = params["state"], params["store"]
    if state == "absent" and not params["token"]:
        raise ReplicationError("Failed to release the lock of %s: token is required with state=absent" % params["server"])
    if params["slots"] < 0 or (params["slots"] and store == "bucket"):
        raise ReplicationError("Failed to lock the server %s: slots must be 0 or more, and needs store host or both (a slot is a "
                               "file beside the host lock)" % params["server"])
    token = params["token"] or _run_lock.new_token()
    slot, waited = None, 0.0
    if state == "absent" and store != "bucket":
        # The slot first: it is only held while the lock is.
        slot = _host_slots.held_by(params["dir"], token) if module.check_mode else _host_slots.release(params["dir"], token)
    result = _locks(module, token, state)
    if state == "present" and params["slots"]:
        try:
            slot, waited = _take_slot(module, token, result)
        except ReplicationError:
            # Fail having taken nothing: what this task locked is given back.
            if result["changed"] and not module.check_mode:
                _locks(module, token, "absent")
            raise
    if store != "bucket":
        result.update(slot=slot, slot_waited=waited)
    return dict(result, store=store)


def main():
    ReplicationModule(OPTIONS, groups=("cos",), action="lock the server",
                      required_if=[("store", "host", ("dir",)), ("store", "bucket", ("cos", "bucket")),
                                   ("store", "both", ("dir", "cos", "bucket"))]).run(_run)


if __name__ == "__main__":
    main()
