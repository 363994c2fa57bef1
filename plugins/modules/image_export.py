#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_export
short_description: Export an image of an OpenStack region's Glance into the bucket, for any target to import
version_added: 0.3.0
description:
  - Streams a Glance image (C(qcow2) or C(raw)) into O(bucket) as the collection's object
    C(<prefix><server>/<server>-<YYYYMMDD-HHMMSS>.<format>), so that M(vmimage.replication.image_import) registers it in
    IBM VPC, PowerVS, another Glance or the bucket catalog like an image the pipeline uploaded.
  - Nothing is staged locally; one part (O(part_size)) is held in memory at a time.
  - Before the object gets its metadata, Glance's C(os_hash_value) and size must equal what was read and, for a QCOW2
    image, the guest digest recomputed from the stored object must equal the image's C(vmimage_guest_sha256) when it
    records one. On any mismatch the object is deleted and the task fails, naming the image.
  - The snapshot time in the key is the image's C(vmimage_snapshot_time) (images this collection imported), else its
    creation time. The object records the image's id; exporting the same image again changes nothing.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - openstacksdk
  - ibm-cos-sdk
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.openstack
attributes:
  check_mode:
    support: full
    description: Finds the image and the key, and says whether an export would be made; nothing is read or written.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: The object of an image that is exported already is left as it is.
options:
  server:
    description: The server the image is of; names the object's key and its C(source-server) metadata.
    type: str
    required: true
  image:
    description: Name or id of the Glance image; default C(<server>-latest).
    type: str
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  prefix:
    description: Key prefix of the collection's objects.
    type: str
    default: images/
  part_size:
    description: Bytes per multipart part, held in memory while it is sent; raised when the image would need more than 10,000 parts.
    type: int
    default: 67108864
seealso:
  - module: vmimage.replication.image_import
  - module: vmimage.replication.image_verify
"""

EXAMPLES = r"""
- name: Export web01's latest image of RegionOne's Glance into the bucket
  vmimage.replication.image_export:
    openstack:
      cloud: prod
      region_name: RegionOne
    cos: "{{ cos }}"
    bucket: dr-images
    server: web01
  register: exported

- name: Register it in an IBM VPC region
  vmimage.replication.image_import:
    target: ibm_vpc
    ibm_vpc: "{{ vpc }}"
    cos: "{{ cos }}"
    bucket: dr-images
    server: web01
    key: "{{ exported.key }}"
"""

RETURN = r"""
key:
  description: The object's key.
  returned: always
  type: str
  sample: images/web01/web01-20260301-120000.qcow2
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: dr-images
format:
  description: The image's disk format, and the object's.
  returned: always
  type: str
  sample: qcow2
snapshot_time:
  description: The time in the key (UTC).
  returned: always
  type: str
  sample: "2026-03-01T12:00:00Z"
sha256:
  description: sha256 of the object's bytes; null in check mode when nothing is exported yet.
  returned: always
  type: str
  sample: 9f2c7d0e5b3a41f6c8e2d7b9a0c1e3f5a7b9d1c3e5f7a9b1c3d5e7f9a1b3c5d7
guest_sha256:
  description: The guest digest of a QCOW2 image, recomputed from the stored object; null for raw images.
  returned: always
  type: str
  sample: 3f5a0c0e51d7a4a0b5d3a8c6f1e2b7c4d9e0f1a2b3c4d5e6f708192a3b4c5d6e
size:
  description: Bytes of the object.
  returned: always
  type: int
  sample: 70123520
image:
  description: The Glance image exported.
  returned: always
  type: dict
  contains:
    id:
      description: Its id.
      type: str
      sample: 5e0a0e4e-1c3b-4d77-9c60-9f4a1f3b2c11
    name:
      description: Its name.
      type: str
      sample: web01-latest
    os_hash_algo:
      description: Glance's hash algorithm.
      type: str
      sample: sha512
    os_hash_value:
      description: Glance's hash of the image, checked against the bytes read.
      type: str
      sample: 1f40fc92da241694750979ee6cf582f2d5d7d28e18335de05abc54d0560e0f5302860c652bf08d560252aa5e74210546f369fbbbce8c12cfc7957b2652fe9a75
changed:
  description: Whether an object was (in check mode, would be) written.
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _openstack_cloud, _openstack_export, _provider_options
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    server=dict(type="str", required=True),
    image=dict(type="str"),
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", default="images/"),
    part_size=dict(type="int", default=64 * 1024 * 1024),
    **_provider_options.OPENSTACK
)


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    module.require_library("openstacksdk", _openstack_cloud.IMPORT_ERROR)
    return _openstack_export.Export(module.params).run(check_mode=module.check_mode)


def main():
    ReplicationModule(OPTIONS, groups=("cos",), action="export the image").run(run)


if __name__ == "__main__":
    main()
