# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  heartbeat_file:
    description:
      - A file whose modification time says that someone still follows this task, for example the run lock
        of M(vmimage.replication.run_lock), touched at every poll by M(vmimage.replication.job_progress).
      - With O(abandon_after), a task run with C(async) stops itself when nobody has followed it for that long
        (the controller died or was cancelled), cleaning up as on SIGTERM, and then removes that file.
    type: path
  abandon_after:
    description:
      - Seconds without a touch of O(heartbeat_file) (counted from the later of the task's start and the last
        touch) after which the task stops itself. Unset or V(0), the task never stops for that reason.
    type: float
  bucket_lock:
    description:
      - The run's lock in the bucket (M(vmimage.replication.run_lock) with O(vmimage.replication.run_lock#module:store=bucket)),
        released together with O(heartbeat_file) when the task stops itself, so that the next run need not wait for it to
        go stale. Reached with the task's object storage connection; ignored by tasks that have none.
    type: dict
    suboptions:
      bucket:
        description: Bucket of the lock object.
        type: str
        required: true
      key:
        description: Key of the lock object (C(<prefix><server>/.lock)).
        type: str
        required: true
      token:
        description: Token of the run that holds it.
        type: str
        required: true
"""
