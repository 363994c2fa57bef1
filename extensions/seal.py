#!/usr/bin/env python
# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Seal object storage credentials for one run: JSON on stdin -> {"sealed": ..., "key": ...} on stdout.

    echo '{"endpoint": "...", "region": "us-south", "access_key_id": "...", "secret_access_key": "..."}' \
      | python3 extensions/seal.py

Give "sealed" to the playbook as the extra var powervc_host_sealed_cos and "key" as the environment variable
VMIMAGE_SEAL_KEY of that run only. Needs pycryptodome and the collection importable (installed, or
ANSIBLE_COLLECTIONS_PATH / PYTHONPATH pointing at the directory that holds ansible_collections/).
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _entry in [os.path.abspath(os.path.join(_HERE, "..", "..", "..", ".."))] + os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep):
    if _entry and _entry not in sys.path:
        sys.path.append(_entry)

try:
    from ansible_collections.vmimage.replication.plugins.module_utils import _sealed
except ImportError as exc:
    sys.stderr.write("seal: cannot import the collection vmimage.replication (%s); install it or set ANSIBLE_COLLECTIONS_PATH\n" % exc)
    sys.exit(2)

if __name__ == "__main__":
    sys.exit(_sealed.main())
