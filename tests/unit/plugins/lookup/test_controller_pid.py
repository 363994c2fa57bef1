# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""lookup('vmimage.replication.controller_pid'): the parent of the process that evaluates it, and it changes when that parent dies."""

from __future__ import annotations

import os
import time

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.vmimage.replication.plugins.lookup.controller_pid import LookupModule


def test_it_is_the_parent_of_the_evaluating_process():
    assert LookupModule().run([]) == [os.getppid()]


def test_it_changes_once_the_parent_is_gone():
    """A worker's view when ansible-playbook is killed: a grandchild reports its parent, then (orphaned) another pid."""
    read, write = os.pipe()
    parent = os.fork()
    if parent == 0:  # the "controller": forks the "worker" and dies; neither may ever return into pytest
        try:
            worker = os.fork()
            if worker == 0:
                try:
                    before = LookupModule().run([])[0]
                    os.kill(os.getppid(), 9)
                    deadline = time.monotonic() + 30
                    while LookupModule().run([])[0] == before and time.monotonic() < deadline:
                        time.sleep(0.01)
                    os.write(write, b"%d %d" % (before, LookupModule().run([])[0]))
                finally:
                    os._exit(0)
            os.waitpid(worker, 0)  # killed before the worker is done
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        before, after = (int(v) for v in handle.read().split())
    os.waitpid(parent, 0)
    assert before == parent and after != parent


def test_terms_are_refused():
    with pytest.raises(AnsibleLookupError, match="takes no terms"):
        LookupModule().run(["x"])
