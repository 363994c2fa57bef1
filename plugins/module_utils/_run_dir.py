# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The private directory of one replication run on the conversion host, and the mark of the snapshot it owns."""

from __future__ import annotations

import os
import shutil

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

MARK = "snapshot.owned"


def read_mark(path):
    """The snapshot name in the run directory's mark, or None when there is none."""
    try:
        with open(os.path.join(path, MARK)) as handle:
            return handle.read().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ReplicationError("Failed to read the mark %s: %s" % (os.path.join(path, MARK), exc.strerror or exc)) from None


def make(path, mark=None, check_mode=False):
    """Make ``path`` (0700), then write ``mark`` into it; return (the mark found before, whether anything changed)."""
    marked = read_mark(path)
    private = os.path.isdir(path) and (os.stat(path).st_mode & 0o777) == 0o700
    changed = not private or (mark is not None and mark != marked)
    if check_mode:
        return marked, changed
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        # Holds the image of a server's disk: private whatever the umask, or a directory made before, allowed.
        os.chmod(path, 0o700)
        if mark is not None and mark != marked:
            temp = os.path.join(path, MARK + ".tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(mark + "\n")
            os.replace(temp, os.path.join(path, MARK))
    except OSError as exc:
        raise ReplicationError("Failed to prepare the run directory %s: %s; check that replication_work_dir is a writable"
                               " directory and that nothing else has this path" % (path, exc.strerror or exc)) from None
    return marked, changed


def remove(path, check_mode=False):
    """Remove ``path`` and all it holds; return whether it was there."""
    if not os.path.lexists(path):
        return False
    if not check_mode:
        try:
            if os.path.islink(path) or not os.path.isdir(path):
                os.unlink(path)  # never follow a link out of the work dir
            else:
                shutil.rmtree(path)
        except OSError as exc:
            raise ReplicationError("Failed to remove the run directory %s: %s" % (path, exc.strerror or exc)) from None
    return True
