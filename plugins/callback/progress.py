# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: progress
type: notification
short_description: Print the progress of long replication stages as they are polled
version_added: 0.1.0
author:
  - vmimage.replication contributors (@vmimage)
description:
  - Prints one line per poll of M(vmimage.replication.job_progress) (each C(until) retry, and the
    final result) with the server, the stage, the percent done, the bytes and the rate.
  - "For example: C(web01 | upload: 62.5% (320.0 MiB of 512.0 MiB, 96.0 MiB/s))."
  - Works beside any stdout callback. Under ansible-runner the same records are in the
    C(runner_retry) events, in C(event_data.res.progress).
  - Enable it with C(callbacks_enabled = vmimage.replication.progress) in C(ansible.cfg).
requirements:
  - enabled in C(callbacks_enabled)
"""

from ansible.plugins.callback import CallbackBase

try:
    from ansible_collections.vmimage.replication.plugins.module_utils._progress import describe
except ImportError:  # pragma: no cover - the collection is always importable beside its own plugin
    describe = None


def progress_line(host, result):
    """The line to print for one poll result, or None when the result carries no progress."""
    progress = result.get("progress") if isinstance(result, dict) else None
    if not progress or not isinstance(progress, dict) or describe is None:
        return None
    return "%s | %s" % (host, describe(progress))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "vmimage.replication.progress"
    CALLBACK_NEEDS_ENABLED = True

    def _show(self, result):
        # pylint: disable=protected-access
        line = progress_line(result._host.get_name(), result._result)
        if line:
            self._display.display(line)

    def v2_runner_retry(self, result):
        self._show(result)

    def v2_runner_on_ok(self, result):
        if result._task.action in ("vmimage.replication.job_progress", "job_progress"):  # pylint: disable=protected-access
            self._show(result)
