"""Tests only: the playbook runs of one test session share one cache of module payloads (AnsiballZ).

Ansible builds a module's payload (parsing every module_utils file the module imports) once per playbook run and
module type, into a cache in that run's own local temp directory; the tests make hundreds of playbook runs of the same
modules. This callback, loaded without being enabled, points the run's cache at the session's directory named by
VMI_TEST_PAYLOAD_CACHE, in a subdirectory per state of the collection's code (VMI_TEST_PAYLOAD_SOURCES: Ansible keys
its cache by module name only, so an edit made while a session runs must not find the payloads of before). The
payloads stay Ansible's own; Ansible's lock and atomic rename keep concurrent runs safe.
"""

from __future__ import annotations

import hashlib
import os

from ansible import constants as C
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "shared_payload_cache"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shared = os.environ.get("VMI_TEST_PAYLOAD_CACHE")
        # Where module_common looks for built payloads; Ansible removes the run's temp dir (not what a link points at).
        link = os.path.join(C.DEFAULT_LOCAL_TMP, "ansiballz_cache")
        if shared and not os.path.lexists(link):
            shared = os.path.join(shared, _state(os.environ.get("VMI_TEST_PAYLOAD_SOURCES")))
            os.makedirs(shared, mode=0o700, exist_ok=True)
            os.symlink(shared, link)


def _state(sources):
    """A short digest of every file's path, size and modification time under ``sources`` (about a millisecond)."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(sources or os.devnull):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            info = os.stat(path)
            digest.update(("%s %d %d\n" % (path, info.st_size, info.st_mtime_ns)).encode())
    return digest.hexdigest()[:16]
