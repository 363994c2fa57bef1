# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Follow an Ansible async job and the progress file its module writes.

An async job (``async: N`` / ``poll: 0``) leaves ``<async_dir>/<jid>``: while it
runs the file holds ``{"started": true, "finished": false}``; when it ends the
module's own result (which has no ``started`` key) replaces it. The progress
file (see ``_progress.py``) says how far the module has got.
"""

from __future__ import annotations

import json
import os
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _files
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._progress import describe, read


def job_state(async_dir, jid):
    """Return ``(finished, failed, data)`` for the job ``jid``; raise when there is no such job."""
    path = os.path.join(async_dir, jid)
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ReplicationError(
            "Failed to find async job %s in %s: no job file; check that the job id comes from a task run with"
            " async and poll 0 on this host, and that async_dir matches the connection's async directory" % (jid, async_dir),
            jid=jid,
        ) from None
    except OSError as exc:
        raise ReplicationError("Failed to read async job %s in %s: %s" % (jid, async_dir, exc), jid=jid) from None
    try:
        data = json.loads(text)
    except ValueError:
        # The wrapper replaces the file atomically; an unreadable file means it has not been written yet.
        return False, False, {}
    if not isinstance(data, dict):
        return False, False, {}
    if "started" in data and not data.get("finished"):
        return False, False, data
    failed = bool(data.get("failed")) or (isinstance(data.get("rc"), int) and data["rc"] != 0)
    return True, failed, data


def touch(path):
    """Touch the heartbeat file ``path`` when it exists (a run lock); never create it. Return whether it was touched."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ReplicationError("Failed to touch the heartbeat file %s: %s" % (path, exc.strerror or exc)) from None
    return True


def collect(async_dir, jid, data, remove=True):
    """The finished job's own result, as async_status gives it, and its job file removed (unless ``remove`` is false).

    Done in the poll that sees the job finish, this saves the two async_status calls (status, cleanup) that would
    follow: each module call costs a Python start and Ansible's module_utils imports on the host.
    """
    result = {key: value for key, value in data.items() if key != "invocation"}
    result.update(finished=True, ansible_job_id=jid)
    if remove:
        try:
            _files.remove(os.path.join(async_dir, jid))
        except OSError as exc:
            raise ReplicationError("Failed to remove the job file of async job %s in %s: %s" % (jid, async_dir, exc.strerror or exc),
                                   jid=jid) from None
    return result


def warning_texts(result):
    """The warnings a job's module left in its result, as text (ansible-core 2.19 writes them as event records)."""
    texts = []
    for warning in (result or {}).get("warnings") or []:
        if isinstance(warning, dict):
            event = warning.get("event") if isinstance(warning.get("event"), dict) else warning
            warning = event.get("msg") or json.dumps(warning, sort_keys=True)
        texts.append(str(warning))
    return texts


def poll(jid, progress_file=None, async_dir="~/.ansible_async", wait=5.0, interval=0.25, clock=time.monotonic, pause=time.sleep,
         heartbeat_file=None, collect_result=False, remove=True):
    """Wait up to ``wait`` seconds for the job to finish; return the module result for job_progress.

    With ``collect_result``, a finished job's result comes back as ``result`` and its job file is removed (``remove``).
    """
    if heartbeat_file:
        touch(heartbeat_file)
    async_dir = os.path.expanduser(async_dir)
    deadline = clock() + max(wait, 0.0)
    while True:
        finished, failed, data = job_state(async_dir, jid)
        remaining = deadline - clock()
        if finished or remaining <= 0:
            break
        pause(min(interval, remaining))
    progress = (read(progress_file) if progress_file else None) or {}
    answer = dict(
        changed=False,
        jid=jid,
        finished=finished,
        failed_job=failed,
        progress=progress,
        msg=_message(jid, finished, failed, data, progress),
    )
    if collect_result and finished:
        answer["result"] = collect(async_dir, jid, data, remove=remove)
    return answer


def _message(jid, finished, failed, data, progress):
    if failed:
        cause = data.get("msg") or "the module reported a failure"
        return "job %s failed: %s" % (jid, str(cause).splitlines()[0] if str(cause) else cause)
    line = describe(progress) if progress else None
    if finished:
        return "job %s finished%s" % (jid, " (%s)" % line if line else "")
    return line or "job %s running, no progress reported yet" % jid
