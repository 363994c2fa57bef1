#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cos_upload
short_description: Upload a disk image to IBM Cloud Object Storage or any S3 endpoint, resumably and verified
version_added: 0.1.0
description:
  - Uploads one local file to a bucket. Files smaller than O(part_size_mb) go in one request; larger
    ones as a multipart upload whose parts are sent by O(concurrency) threads, each with its MD5,
    and checked against the ETag the endpoint returns.
  - Resumable. When an interrupted multipart upload of the same key exists, the parts already
    stored whose size and MD5 match the local file are kept and only the others are sent.
    Older interrupted uploads of that key are aborted.
  - Idempotent. When the object at O(key) already carries the same C(sha256) metadata and size,
    nothing is uploaded.
  - The object's metadata always has C(created-by=vmimage.replication) and C(sha256), besides O(metadata).
  - A failed upload is aborted, so it leaves no incomplete multipart upload, unless O(keep_incomplete=true).
  - Before anything else the bucket is looked up; a missing bucket, wrong keys, or a bucket that the
    endpoint reports in another region than O(cos.region) fail with a message naming the bucket and endpoint.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cos-sdk
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.progress
  - vmimage.replication.watchdog
attributes:
  check_mode:
    support: full
    description: Reads the file (for its sha256) and the object's metadata; reports whether it would upload or delete.
  diff_mode:
    support: none
    description: Returns no diff; RV(changed) and the result say what changed.
  idempotent:
    support: full
    description: A second run with the same file uploads nothing; a second delete deletes nothing.
options:
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  key:
    description: Object key to upload to, for example C(images/web01/web01-20250101-120000.qcow2).
    type: str
    required: true
  src:
    description:
      - Local file to upload. Required when O(state=present).
    type: path
  state:
    description:
      - V(present) uploads O(src) unless the object is already there with the same sha256.
      - V(absent) deletes the object and aborts any in-progress multipart upload of O(key).
    type: str
    choices: [present, absent]
    default: present
  part_size_mb:
    description:
      - Size of each part of a multipart upload, in MiB. S3 needs at least 5. It is raised when the
        file would need more than 10,000 parts, and an upload that is resumed keeps its own part size.
    type: int
    default: 16
  concurrency:
    description:
      - Number of parts sent at the same time. Each part in flight is held in memory, so the upload
        needs about O(part_size_mb) times O(concurrency) MiB.
    type: int
    default: 4
  metadata:
    description:
      - Extra user metadata for the object. Keys are lower-case letters, digits and hyphens,
        for example C(source-server), C(snapshot-time).
    type: dict
    default: {}
  sha256:
    description:
      - Hex sha256 of O(src) when it is already known (for example from M(vmimage.replication.qemu_convert)),
        which saves reading the file once more. Computed when unset.
    type: str
  keep_incomplete:
    description:
      - Keep the multipart upload when the upload fails, so that the next run resumes it.
      - By default a failed upload is aborted. An upload whose process is killed is always left,
        and is resumed by the next run; M(vmimage.replication.cos_multipart_uploads) removes old ones.
    type: bool
    default: false
notes:
  - The IBM Cloud API key path (O(cos.api_key)) uses the SDK's IAM token handling.
seealso:
  - module: vmimage.replication.cos_multipart_uploads
"""

EXAMPLES = r"""
- name: Upload the converted image
  vmimage.replication.cos_upload:
    cos:
      endpoint: https://s3.us-south.cloud-object-storage.appdomain.cloud
      region: us-south
      access_key_id: "{{ cos_hmac_access_key_id }}"
      secret_access_key: "{{ cos_hmac_secret_access_key }}"
    bucket: dr-images
    key: images/web01/web01-20250101-120000.qcow2
    src: /var/tmp/work/web01.qcow2
    sha256: "{{ converted.sha256 }}"
    metadata:
      source-server: web01
      snapshot-time: "2025-01-01T12:00:00Z"
      format: qcow2
    progress_file: /var/tmp/work/web01.upload.progress
  async: 7200
  poll: 0
  register: upload_job

- name: Remove an object and any unfinished upload of it
  vmimage.replication.cos_upload:
    cos: "{{ cos }}"
    bucket: dr-images
    key: images/web01/web01-20250101-120000.qcow2
    state: absent
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
endpoint:
  description: The endpoint used.
  returned: always
  type: str
  sample: https://s3.us-south.cloud-object-storage.appdomain.cloud
changed:
  description: Whether the object was uploaded or deleted, or uploads aborted (would be, in check mode).
  returned: always
  type: bool
  sample: true
size:
  description: Size of the file and of the object, in bytes.
  returned: state is present
  type: int
  sample: 1073741824
sha256:
  description: Hex sha256 of the file, as recorded in the object's metadata.
  returned: state is present
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
etag:
  description: ETag of the object (unquoted). In check mode, the existing object's, or null.
  returned: state is present
  type: str
  sample: d316408c159ea701ab954894bd3a92c2-16
metadata:
  description: User metadata of the object, keys in lower case. In check mode, what it would be.
  returned: state is present
  type: dict
  sample: {"created-by": "vmimage.replication", "sha256": "9f86d0...", "source-server": "web01"}
parts:
  description: Number of parts of the upload (1 for a single request, 0 when nothing was uploaded).
  returned: state is present
  type: int
  sample: 16
resumed_parts:
  description: Parts kept from an interrupted upload instead of being sent again.
  returned: state is present
  type: int
  sample: 0
uploaded_bytes:
  description: Bytes sent in this run.
  returned: state is present
  type: int
  sample: 1073741824
seconds:
  description: Wall time of the upload, in seconds.
  returned: state is present
  type: float
  sample: 12.5
bytes_per_second:
  description: O(src) bytes sent per second in this run.
  returned: state is present
  type: int
  sample: 85899345
deleted:
  description: Whether an object was deleted (would be, in check mode).
  returned: state is absent
  type: bool
  sample: true
aborted:
  description: Upload ids of in-progress multipart uploads of the key that were aborted (would be, in check mode).
  returned: state is absent
  type: list
  elements: str
  sample: ["2~kDq9k5fS0EX1d3zQ"]
"""

import os

from ansible_collections.vmimage.replication.plugins.module_utils import _cos
from ansible_collections.vmimage.replication.plugins.module_utils import _multipart
from ansible_collections.vmimage.replication.plugins.module_utils import _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule
from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile

OPTIONS = dict(
    bucket=dict(type="str", required=True),
    key=dict(type="str", required=True, no_log=False),
    src=dict(type="path"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    part_size_mb=dict(type="int", default=16),
    concurrency=dict(type="int", default=4),
    metadata=dict(type="dict", default={}),
    sha256=dict(type="str"),
    keep_incomplete=dict(type="bool", default=False),
)
OPTIONS.update(_watchdog.SPEC)  # stops itself when nobody follows it (heartbeat_file, abandon_after)


def _present(module, client, cos, bucket, key):
    params = module.params
    src = params["src"]
    if not os.path.isfile(src):
        raise ReplicationError(
            "Failed to upload file %s to s3://%s/%s at %s: the file does not exist or is not a regular file; check src"
            % (src, bucket, key, cos["endpoint"]), src=src, bucket=bucket, key=key, endpoint=cos["endpoint"],
        )
    if params["part_size_mb"] < 5 or params["concurrency"] < 1:
        raise ReplicationError("Failed to upload file %s: part_size_mb must be at least 5 and concurrency at least 1" % src)
    if module.check_mode:
        sha256, existing, needed = _multipart.plan(client, bucket, key, src, params["sha256"])
        metadata = _cos.object_metadata(params["metadata"], sha256) if needed else existing["metadata"]
        size = os.path.getsize(src)
        return dict(size=size, sha256=sha256, etag=existing and existing["etag"], metadata=metadata, parts=0, resumed_parts=0,
                    uploaded_bytes=0, seconds=0.0, bytes_per_second=0, changed=needed)
    _cos.object_metadata(params["metadata"], "0")  # reject bad metadata keys before reading the file
    progress = ProgressFile(params["progress_file"], "upload")
    return _cos.upload_file(client, bucket, key, src, params["part_size_mb"] * _multipart.MIB, params["concurrency"],
                            params["metadata"], sha256=params["sha256"], progress=progress, keep_incomplete=params["keep_incomplete"])


def _absent(module, client, bucket, key):
    existing = _cos.head(client, bucket, key)
    uploads = _cos.uploads_for_key(client, bucket, key)
    if not module.check_mode:
        for upload in uploads:
            _cos.abort_upload(client, bucket, key, upload["upload_id"])
        if existing is not None:
            client.delete_object(Bucket=bucket, Key=key)
    aborted = [upload["upload_id"] for upload in uploads]
    return dict(deleted=existing is not None, aborted=aborted, changed=existing is not None or bool(aborted))


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    params = module.params
    cos, bucket, key = params["cos"], params["bucket"], params["key"]
    if params["state"] == "present" and not params["src"]:
        raise ReplicationError("Failed to upload to s3://%s/%s: src is required when state is present" % (bucket, key))
    action = "upload" if params["state"] == "present" else "delete"

    def local_error(exc):
        return "Failed to %s file %s to s3://%s/%s at %s: %s" % (action, params["src"], bucket, key, cos["endpoint"], exc)
    with _cos.naming_errors(action, cos, bucket, key, local_error):
        client = _cos.connect(cos, max_pool_connections=params["concurrency"] + 2)
        _cos.check_bucket(client, cos, bucket)
        result = _present(module, client, cos, bucket, key) if params["state"] == "present" else _absent(module, client, bucket, key)
    result.update(bucket=bucket, key=key, endpoint=cos["endpoint"])
    return result


def main():
    ReplicationModule(OPTIONS, groups=("cos", "progress")).run(_watchdog.guarded(run, "upload the image to", undo=_watchdog.undo_object))


if __name__ == "__main__":
    main()
