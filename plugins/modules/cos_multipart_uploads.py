#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cos_multipart_uploads
short_description: List and abort old in-progress multipart uploads in a bucket
version_added: 0.1.0
description:
  - Lists the multipart uploads under O(prefix) that were started more than O(older_than) seconds ago.
    Incomplete uploads are billed for their stored parts and are invisible to object listings.
  - With O(abort=true) aborts them, which frees their parts. Use it in a cleanup play after a
    hard kill; M(vmimage.replication.cos_upload) resumes the newest upload of a key itself.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cos-sdk
extends_documentation_fragment:
  - vmimage.replication.cos
attributes:
  check_mode:
    support: full
    description: Reports in RV(aborted) what it would abort, and aborts nothing.
  diff_mode:
    support: none
    description: Returns no diff; RV(changed) and the result say what changed.
  idempotent:
    support: full
    description: A second run finds nothing left to abort.
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Only uploads whose key starts with this.
    type: str
    default: ''
  older_than:
    description: Only uploads started at least this many seconds ago. V(0) selects all.
    type: int
    default: 86400
  abort:
    description: Abort the selected uploads.
    type: bool
    default: false
seealso:
  - module: vmimage.replication.cos_upload
"""

EXAMPLES = r"""
- name: Abort uploads under images/ left for more than a day
  vmimage.replication.cos_multipart_uploads:
    cos: "{{ cos }}"
    bucket: dr-images
    prefix: images/
    older_than: 86400
    abort: true
  register: stale

- name: Say what was removed
  ansible.builtin.debug:
    msg: "aborted {{ stale.aborted | length }} incomplete uploads"
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
  description: Whether uploads were aborted (would be, in check mode).
  returned: always
  type: bool
  sample: true
uploads:
  description: The selected uploads (under O(prefix), older than O(older_than)), oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Object key of the upload.
      type: str
      sample: images/web01/web01-20250101-120000.qcow2
    upload_id:
      description: Upload id.
      type: str
      sample: 2~kDq9k5fS0EX1d3zQ
    initiated:
      description: When the upload was started, UTC.
      type: str
      sample: "2025-01-01T12:03:04Z"
  sample: [{"key": "images/web01/web01-20250101-120000.qcow2", "upload_id": "2~kDq9k5fS0EX1d3zQ", "initiated": "2025-01-01T12:03:04Z"}]
aborted:
  description: The uploads aborted (in check mode, that would be), same form as RV(uploads).
  returned: always
  type: list
  elements: dict
  sample: []
"""

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _cos
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", default=""),
    older_than=dict(type="int", default=86400),
    abort=dict(type="bool", default=False),
)


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    params = module.params
    cos, bucket = params["cos"], params["bucket"]
    if params["older_than"] < 0:
        raise ReplicationError("Failed to list multipart uploads in bucket %s: older_than must be 0 or more seconds" % bucket)
    action = "abort multipart uploads in" if params["abort"] else "list multipart uploads in"
    with _cos.naming_errors(action, cos, bucket):
        client = _cos.connect(cos)
        _cos.check_bucket(client, cos, bucket)
        now = datetime.datetime.now(datetime.timezone.utc)
        chosen = _cos.list_under_prefix(client, bucket, params["prefix"], "uploads", min_age=params["older_than"], now=now)
        if params["abort"] and not module.check_mode:
            for upload in chosen:
                _cos.abort_upload(client, bucket, upload["key"], upload["upload_id"])
    listed = [dict(key=u["key"], upload_id=u["upload_id"], initiated=_cos.utc_text(u["time"])) for u in chosen]
    aborted = listed if params["abort"] else []
    return dict(bucket=bucket, endpoint=cos["endpoint"], uploads=listed, aborted=aborted, changed=bool(aborted))


def main():
    ReplicationModule(OPTIONS, groups=("cos",)).run(run)


if __name__ == "__main__":
    main()
