# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  progress_file:
    description:
      - File to which the module writes its progress (stage, bytes done and total, percent,
        rate) while it runs, replaced atomically about once a second.
      - Run the module with C(async) and poll it with M(vmimage.replication.job_progress)
        to show the progress in the play output and in ansible-runner events.
    type: path
"""
