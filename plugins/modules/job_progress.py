#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: job_progress
short_description: Follow an async job of this collection and report its progress
version_added: 0.1.0
description:
  - Reads the job file of an Ansible async task (started with C(async) and C(poll=0)) and the
    progress file written by the module it runs, for example M(vmimage.replication.qemu_convert)
    or M(vmimage.replication.cos_upload).
  - Waits up to O(wait) seconds and returns as soon as the job finishes, so a task with
    C(until), C(retries) and C(delay=0) polls without sleeping longer than needed.
  - Each poll is one C(runner_retry) event in ansible-runner carrying RV(progress), and one line
    in the play output when the callback plugin C(vmimage.replication.progress) is enabled.
  - Never changes anything but the job file it is asked to collect. With O(collect), the poll that sees the job
    finish returns the job's result and removes its job file, as M(ansible.builtin.async_status) would in two
    more calls; otherwise use M(ansible.builtin.async_status) afterwards.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.cos
attributes:
  check_mode:
    support: full
    description: Only reads files; it returns the same answer in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is no difference to show.
  idempotent:
    support: full
    description: Polling changes nothing; RV(changed) is always false (a collected job file is bookkeeping of the poll).
options:
  jid:
    description:
      - Job id, the C(ansible_job_id) returned by the task started with C(async) and C(poll=0).
    type: str
    required: true
  progress_file:
    description:
      - Progress file the job's module writes (its C(progress_file) option). When unset or not
        written yet, RV(progress) is empty.
    type: path
  async_dir:
    description:
      - Directory holding async job files on the host the job runs on.
      - Falls back to E(ANSIBLE_ASYNC_DIR), then C(~/.ansible_async), as Ansible's own default.
        Pass C({{ ansible_async_dir | default(omit) }}) when the inventory changes it.
    type: path
    default: ~/.ansible_async
  heartbeat_file:
    description:
      - A file touched at each poll when it exists (never created), for example the run lock of
        M(vmimage.replication.run_lock), whose modification time says that the run is still followed.
    type: path
  bucket_heartbeat:
    description:
      - The run lock in the bucket (M(vmimage.replication.run_lock) with C(store=bucket)) whose heartbeat this poll
        refreshes, at most once every O(bucket_heartbeat.every) seconds so that polls stay quick. Needs O(cos) and
        O(heartbeat_file) (beside which a stamp file C(<heartbeat_file>.bucket-beat) notes the last one).
      - A heartbeat that fails, or finds the lock no longer held by O(bucket_heartbeat.token), is a warning, not a
        failure of the poll.
    type: dict
    suboptions:
      bucket:
        description: Bucket of the lock.
        type: str
        required: true
      prefix:
        description: Key prefix of the server's objects.
        type: str
        default: ''
      server:
        description: Server the lock is for.
        type: str
        required: true
      token:
        description: Owner token of the lock (RV(vmimage.replication.run_lock#module:token)).
        type: str
        required: true
      protocol:
        description: Protocol the lock was taken with (RV(vmimage.replication.run_lock#module:protocol)).
        type: str
        choices: [conditional, claims]
        required: true
      every:
        description: Shortest time between two heartbeats of the bucket lock, in seconds.
        type: float
        default: 60
      stale_after:
        description:
          - Seconds without a heartbeat after which another run may take the lock over (C(replication_lock_stale_after)).
          - With the C(claims) protocol, a claim found older than half of it is not refreshed but counted as lost, so that
            a heartbeat can never bring back a claim that another run is removing as stale.
        type: float
        default: 900
  cos:
    description: Connection to the object storage holding the bucket lock; used only with O(bucket_heartbeat).
    type: dict
    required: false
  wait:
    description:
      - Longest time to wait for the job to finish before returning, in seconds.
      - V(0) looks once and returns.
    type: float
    default: 5.0
  collect:
    description:
      - When the job has finished, return its result as RV(result) and remove its job file (kept in check mode).
      - The job's warnings are shown as this task's warnings.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Convert the disk in the background
  vmimage.replication.qemu_convert:
    src: /var/tmp/snap/web01.img
    dest: /var/tmp/work/web01.qcow2
    progress_file: /var/tmp/work/web01.convert.progress
  async: 7200
  poll: 0
  register: convert_job

- name: Follow the conversion
  vmimage.replication.job_progress:
    jid: "{{ convert_job.ansible_job_id }}"
    progress_file: /var/tmp/work/web01.convert.progress
    wait: 5
  register: poll
  until: poll.finished
  retries: 1500
  delay: 0

- name: Collect the conversion's result and remove its job file
  ansible.builtin.async_status:
    jid: "{{ convert_job.ansible_job_id }}"
  register: converted

- name: Follow the upload and collect its result in the poll that sees it end
  vmimage.replication.job_progress:
    jid: "{{ upload_job.ansible_job_id }}"
    wait: 5
    collect: true
  register: upload_poll
  until: upload_poll.finished
  retries: 1500
  delay: 0
"""

RETURN = r"""
jid:
  description: The job id polled.
  returned: success
  type: str
  sample: "j512873046213.81640"
finished:
  description: Whether the job has ended, successfully or not.
  returned: success
  type: bool
  sample: false
failed_job:
  description:
    - Whether the job ended with a failure.
    - Its error is the C(msg) of RV(result) with O(collect); else collect it with M(ansible.builtin.async_status).
  returned: success
  type: bool
  sample: false
progress:
  description:
    - The last record of the progress file, or an empty dict when there is none yet.
  returned: success
  type: dict
  sample:
    stage: convert
    state: running
    done: 167772160
    total: 536870912
    percent: 31.2
    rate: 83886080
    elapsed: 2.0
    updated: 1795310000.5
result:
  description:
    - With O(collect), once the job has finished, the result of the job's module as M(ansible.builtin.async_status)
      returns it (without its C(invocation)), with C(finished) and C(ansible_job_id).
  returned: when O(collect) is true and RV(finished) is true
  type: dict
  sample: {changed: true, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", finished: true, ansible_job_id: "j512873046213.81640"}
changed:
  description: Always false; polling changes nothing.
  returned: always
  type: bool
  sample: false
bucket_heartbeat:
  description:
    - With O(bucket_heartbeat), whether a heartbeat was sent to the bucket lock by this poll (C(sent)) and whether the
      lock is still held by its token (C(held); true when none was due).
  returned: when O(bucket_heartbeat) is set
  type: dict
  sample: {sent: true, held: true}
msg:
  description: One human line about the job, for example C(convert 31.2% (160.0 MiB of 512.0 MiB, 80.0 MiB/s)).
  returned: always
  type: str
  sample: "convert: 31.2% (160.0 MiB of 512.0 MiB, 80.0 MiB/s)"
"""

import copy

from ansible_collections.vmimage.replication.plugins.module_utils import _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._jobs import poll, warning_texts
from ansible_collections.vmimage.replication.plugins.module_utils._module import COS_SPEC, ReplicationModule
from ansible.module_utils.basic import env_fallback

OPTIONS = dict(
    jid=dict(type="str", required=True),
    progress_file=dict(type="path"),
    async_dir=dict(type="path", default="~/.ansible_async", fallback=(env_fallback, ["ANSIBLE_ASYNC_DIR"])),
    wait=dict(type="float", default=5.0),
    collect=dict(type="bool", default=False),
    heartbeat_file=dict(type="path"),
    bucket_heartbeat=dict(type="dict", options=dict(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        server=dict(type="str", required=True),
        token=dict(type="str", required=True, no_log=False),
        protocol=dict(type="str", choices=["conditional", "claims"], required=True),
        every=dict(type="float", default=60.0),
        stale_after=dict(type="float", default=900.0),
    )),
    cos=dict(copy.deepcopy(COS_SPEC["cos"]), required=False),
)


def _bucket_beat(module):
    """Refresh the bucket lock when due; a failure is a warning (the stage goes on; the lock's age tells the rest)."""
    lock, stamp = module.params["bucket_heartbeat"], _run_lock.stamp_path(module.params["heartbeat_file"])
    if not _run_lock.beat_due(stamp, lock["every"]):
        return dict(sent=False, held=True)
    # The S3 SDK only when a beat is due: a poll pays for it once a lock_heartbeat_every, not each time.
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _cos
    cos, key = module.params["cos"], _bucket_lock.lock_key(lock["prefix"], lock["server"])
    try:
        module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
        with _cos.naming_errors("refresh the run lock of %s at" % lock["server"], cos, lock["bucket"], key):
            held = _bucket_lock.heartbeat(_cos.connect(cos), lock["bucket"], key, lock["token"], lock["protocol"], stale_after=lock["stale_after"])
    except ReplicationError as exc:
        module.ansible.warn(exc.msg)
        return dict(sent=False, held=True)
    _run_lock.stamp_beat(stamp)
    if not held:
        module.ansible.warn("The run lock s3://%s/%s is no longer held by this run (token %s): another run took it over"
                            % (lock["bucket"], key, lock["token"]))
    return dict(sent=True, held=held)


def _run(module):
    params = module.params
    # Refused before the poll: a poll that collects a finished job removes its job file.
    if params["bucket_heartbeat"] and (not params["heartbeat_file"] or not params["cos"]):
        raise ReplicationError("Failed to refresh the run lock of %s: bucket_heartbeat needs heartbeat_file and cos"
                               % params["bucket_heartbeat"]["server"])
    result = poll(params["jid"], progress_file=params["progress_file"], async_dir=params["async_dir"], wait=params["wait"],
                  heartbeat_file=params["heartbeat_file"], collect_result=params["collect"], remove=not module.check_mode)
    for warning in warning_texts(result.get("result")):
        module.ansible.warn(warning)
    if params["bucket_heartbeat"]:
        result["bucket_heartbeat"] = _bucket_beat(module)
    return result


def main():
    ReplicationModule(OPTIONS, groups=("cos",)).run(_run)


if __name__ == "__main__":
    main()
