#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cos_object_prune
short_description: Delete objects the collection uploaded under a prefix once they are past retention
version_added: 0.1.0
description:
  - Applies retention to loose objects uploaded by M(vmimage.replication.cos_upload), such as the OVAs kept after
    PowerVS imports. Only objects whose metadata says C(created-by) is C(vmimage.replication) are ever deleted;
    anything else under O(prefix) is left alone.
  - The objects are grouped by their C(source-server) metadata. In each group the newest O(keep_last) stay, ordered by
    their C(snapshot-time) metadata (else their last modification); an older one is deleted, only when it is more than
    O(keep_days) days old if that is given.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cos-sdk
extends_documentation_fragment:
  - vmimage.replication.cos
attributes:
  check_mode:
    support: full
    description: Reports in RV(deleted) what it would delete, and deletes nothing.
  diff_mode:
    support: none
    description: Returns no diff; RV(changed) and RV(deleted) say what changed.
  idempotent:
    support: full
    description: A second run finds nothing past retention.
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Only objects whose key starts with this.
    type: str
    required: true
  format:
    description: Only objects whose C(format) metadata is this, for example V(ova). All formats when unset.
    type: str
  keep_last:
    description: The newest objects of each source server that always stay. At least V(1).
    type: int
    default: 7
  keep_days:
    description: An object beyond O(keep_last) is deleted only when it is more than this many days old. Unset deletes it at once.
    type: float
seealso:
  - module: vmimage.replication.cos_upload
  - module: vmimage.replication.cos_multipart_uploads
"""

EXAMPLES = r"""
- name: Keep the three newest OVAs of each image, and none older than a month beyond them
  vmimage.replication.cos_object_prune:
    cos: "{{ cos }}"
    bucket: dr-images
    prefix: images/
    format: ova
    keep_last: 3
    keep_days: 30
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: dr-images
endpoint:
  description: The endpoint used.
  returned: always
  type: str
  sample: https://s3.us-south.cloud-object-storage.appdomain.cloud
changed:
  description: Whether objects were deleted (would be, in check mode).
  returned: always
  type: bool
  sample: true
kept:
  description: Keys of the objects made by the collection that stay.
  returned: always
  type: list
  elements: str
  sample: ["images/aix72/aix72-20250102-120000.ova"]
deleted:
  description: The objects deleted (in check mode, that would be), oldest first of each source server.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Object key.
      type: str
      sample: images/aix72/aix72-20250101-120000.ova
    size:
      description: Size in bytes.
      type: int
      sample: 1073741824
    server:
      description: The object's C(source-server) metadata.
      type: str
      sample: aix72
    snapshot_time:
      description: The time retention ordered it by, UTC.
      type: str
      sample: "2025-01-01T12:00:00Z"
  sample: []
"""

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _object_prune
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", required=True),
    format=dict(type="str"),
    keep_last=dict(type="int", default=7),
    keep_days=dict(type="float"),
)


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    params = module.params
    cos, bucket = params["cos"], params["bucket"]
    with _cos.naming_errors("prune objects under %s in" % params["prefix"], cos, bucket):
        client = _cos.connect(cos)
        _cos.check_bucket(client, cos, bucket)
        made = _object_prune.list_made(client, bucket, params["prefix"], params["format"])
        now = datetime.datetime.now(datetime.timezone.utc)
        deleted = _object_prune.plan(made, params["keep_last"], params["keep_days"], now)
        if not module.check_mode:
            for obj in deleted:
                _cos.delete_object(client, bucket, obj["key"])
    gone = set(obj["key"] for obj in deleted)
    kept = [obj["key"] for obj in made if obj["key"] not in gone]
    return dict(bucket=bucket, endpoint=cos["endpoint"], kept=kept, deleted=deleted, changed=bool(deleted))


def main():
    ReplicationModule(OPTIONS, groups=("cos",), action="prune objects").run(run)


if __name__ == "__main__":
    main()
