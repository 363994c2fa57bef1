# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: controller_pid
author: vmimage.replication contributors (@vmimage)
version_added: 0.1.0
short_description: The process id of the ansible-playbook that runs this task, as its worker sees it
description:
  - Returns the parent process id of the Ansible worker process that evaluates the lookup, which is the main
    C(ansible-playbook) process while it lives.
  - Ansible runs each task in a worker process of its own session, so a cancel that kills the controller's process group
    (ansible-runner's C(cancel_callback), a kill of the job) leaves the worker running. Once the controller is gone the
    worker's parent changes (to 1 or a subreaper), so a polling loop that compares this value with the one noted at the
    start (C(until)) stops polling, and the stage it follows notices the silence and stops itself.
  - Takes no terms.
"""

EXAMPLES = r"""
- name: Note the controller that follows the stage
  ansible.builtin.set_fact:
    controller: "{{ lookup('vmimage.replication.controller_pid') }}"

- name: Follow the stage while the controller lives
  vmimage.replication.job_progress:
    jid: "{{ job.ansible_job_id }}"
    progress_file: /tmp/progress.json
  register: poll
  until: poll.finished | default(true) or lookup('vmimage.replication.controller_pid') != controller
  retries: 1000
  delay: 0
"""

RETURN = r"""
_raw:
  description: The process id, one element.
  type: list
  elements: int
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("controller_pid takes no terms; got %s" % ", ".join(str(t) for t in terms))
        self.set_options(var_options=variables, direct=kwargs)
        return [os.getppid()]
