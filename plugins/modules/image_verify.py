#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_verify
short_description: Recompute the guest digest of a stored QCOW2 object and check it
version_added: 0.2.0
description:
  - Reads the QCOW2 image stored at O(bucket)/O(key) by ranged GETs, follows its L1 and L2 tables,
    inflates every stored cluster and recomputes the guest digest C(vmimage-guest-v1) (defined in
    C(docs/data-path.md)), a digest of the disk content, not of the container bytes.
  - Fails, naming the object, when the digest differs from O(guest_sha256) or, when that is not
    given, from the C(guest-sha256) the object records (set by M(vmimage.replication.image_upload)).
  - Reads only the image's stored bytes; nothing is written locally.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cos-sdk
  - zstandard (for zstd-compressed images)
extends_documentation_fragment:
  - vmimage.replication.cos
attributes:
  check_mode:
    support: full
    description: Verifies as in a normal run; it changes nothing either way.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Never changes anything.
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  key:
    description: Object key of the QCOW2 image.
    type: str
    required: true
  guest_sha256:
    description:
      - The expected guest digest, for example the one a catalog recorded. When the object records
        one too, both must agree.
      - Without it the object's own C(guest-sha256) metadata is the reference.
    type: str
seealso:
  - module: vmimage.replication.image_upload
"""

EXAMPLES = r"""
- name: Check the image at the target before importing it
  vmimage.replication.image_verify:
    cos: "{{ cos }}"
    bucket: dr-images
    key: images/web01/web01-20250101-120000.qcow2
  register: verified
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: dr-images
key:
  description: The object key.
  returned: always
  type: str
  sample: images/web01/web01-20250101-120000.qcow2
guest_sha256:
  description: The guest digest recomputed from the stored object.
  returned: success
  type: str
  sample: 3f5a0c0e51d7a4a0b5d3a8c6f1e2b7c4d9e0f1a2b3c4d5e6f708192a3b4c5d6e
recorded:
  description: The C(guest-sha256) the object records, if any.
  returned: success
  type: str
  sample: 3f5a0c0e51d7a4a0b5d3a8c6f1e2b7c4d9e0f1a2b3c4d5e6f708192a3b4c5d6e
size:
  description: Bytes of the stored object.
  returned: success
  type: int
  sample: 70123520
virtual_size:
  description: The disk's virtual size in bytes, as recorded on the object.
  returned: success
  type: int
  sample: 2147483648
seconds:
  description: Time the verification took.
  returned: success
  type: float
  sample: 1.8
changed:
  description: Always false.
  returned: always
  type: bool
  sample: false
"""

import time

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _digest
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    bucket=dict(type="str", required=True),
    key=dict(type="str", required=True, no_log=False),
    guest_sha256=dict(type="str"),
)


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    params = module.params
    cos, bucket, key = params["cos"], params["bucket"], params["key"]
    started = time.monotonic()
    with _cos.naming_errors("verify", cos, bucket, key):
        client = _cos.connect(cos)
        result = _digest.verify_object(client, bucket, key, params["guest_sha256"])
    result.update(bucket=bucket, key=key, seconds=round(time.monotonic() - started, 3), changed=False)
    return result


def main():
    ReplicationModule(OPTIONS, groups=("cos",)).run(run)


if __name__ == "__main__":
    main()
