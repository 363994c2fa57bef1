# Copyright: contributors to vmimage.replication
# SPDX-License-Identifier: Apache-2.0
"""What a test run left in the shared temporary directories (/tmp and $TMPDIR)."""

from __future__ import annotations

import fnmatch
import os

# Names the suite's peers and tools make when they are not pointed at pytest's tmp dirs.
PATTERNS = ("runner-*", "weed.*", "seaweedfs-*", "ansible-local-*", "ansible_*", "AnsiballZ*", "qemu-perm-*",
            "tmp*", "ova-*", "pvs-emulator-*")


def shared_dirs():
    """/tmp and $TMPDIR (when it is another directory), as seen before the session redirects it."""
    dirs = ["/tmp"]
    env = os.environ.get("TMPDIR")
    if env and os.path.realpath(env) != "/tmp":
        dirs.append(env)
    return dirs


def snapshot(dirs):
    """{directory: set of entry names} for every directory that exists."""
    listing = {}
    for path in dirs:
        try:
            listing[path] = set(os.listdir(path))
        except OSError:
            listing[path] = set()
    return listing


def leftovers(before, after, patterns=PATTERNS):
    """Sorted paths present in ``after`` but not ``before`` whose names match ``patterns``."""
    found = []
    for path, names in after.items():
        for name in names - before.get(path, set()):
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                found.append(os.path.join(path, name))
    return sorted(found)


def failure_message(found):
    """The run's failure text: what was left, and what to do about it."""
    return ("FAILED: the tests left these in the shared temporary directory (keep them under pytest's tmp dirs "
            "or remove them): %s" % ", ".join(found))
