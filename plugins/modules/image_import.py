#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_import
short_description: Register an uploaded image in the target image library with a rotating C(<server>-latest)
version_added: 0.1.0
description:
  - Registers an image object, uploaded beforehand by M(vmimage.replication.cos_upload), as the newest image of a server,
    keeps the previous latest under its own name C(<server>-<YYYYMMDD-HHMMSS>) (its snapshot time), and prunes images
    past retention.
  - With O(target=bucket_catalog), the bucket is the image library. The catalog of a server is the object
    C(<prefix><server>/catalog.json); it lists the images and names the one C(<server>-latest) resolves to.
  - The object is validated before anything is rotated - it must exist, carry C(sha256) metadata equal to O(sha256) when given,
    and start like the format it declares (C(QFI\xfb) for qcow2). The catalog is written with one PUT after the object was
    validated, so a failed import never changes the previous latest.
  - The objects of pruned (or, with O(state=absent), removed) images are deleted only after the catalog was written, so the
    catalog never lists a deleted object. An object whose delete fails stays in the bucket, is returned in RV(orphaned) with
    a warning, and is listed as an orphan by M(vmimage.replication.image_info); delete it by hand.
  - The newest image by snapshot time is the latest. Importing a snapshot older than the current latest adds it to the catalog
    without moving the latest, and the image imported by a run is never pruned by that run.
  - Images are named after the snapshot's time, never the time of the import.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.catalog
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
options:
  key:
    description:
      - Key of the image object, normally C(<prefix><server>/<server>-<YYYYMMDD-HHMMSS>.qcow2)
        (see the filter P(vmimage.replication.object_key#filter)).
      - Required with O(state=present).
    type: str
  snapshot_time:
    description:
      - UTC time of the snapshot the image was made from, ISO 8601 (V(2026-03-10T12:00:00Z)).
      - Defaults to the object's C(snapshot-time) metadata; when both are there they must agree.
    type: str
  sha256:
    description:
      - Expected sha256 of the image; the import fails unless the object's C(sha256) metadata is the same.
    type: str
  verify_digest:
    description:
      - When the object records a guest digest (C(guest-sha256), set by M(vmimage.replication.image_upload)), recompute it
        from the stored object before importing and fail, naming the object, when it differs (as
        M(vmimage.replication.image_verify) does), whatever the target (a cloud image service is handed the object only
        once it passed). The digest is recorded with the image either way (catalog entry, VPC latest record, Glance
        property C(vmimage_guest_sha256)).
      - Not recomputed in check mode.
    type: bool
    default: true
  keep_object:
    description:
      - With a target that copies the object into its own library (V(ibm_vpc), V(openstack)), V(false) deletes the object
        O(key) once its image is imported and usable, so that the bucket does not grow with every run. A delete that fails
        is a warning naming the object, not a failed import.
      - Must stay V(true) with O(target=bucket_catalog), where the object is the image.
    type: bool
    default: true
  source_fingerprint:
    description:
      - Identity of the source volume's state, recorded in the catalog. Defaults to the object's C(source-fingerprint) metadata.
    type: str
  keep_last:
    description:
      - Number of newest images kept (the latest included). At least 1.
    type: int
    default: 7
  keep_days:
    description:
      - Also keep every image whose snapshot is younger than this many days.
      - An image is pruned only if it is outside the O(keep_last) newest AND (O(keep_days) is unset or its snapshot
        is older than O(keep_days) days). The latest is never pruned.
    type: int
  state:
    description:
      - V(present) imports O(key); V(absent) removes image O(name) and its object.
    type: str
    choices: [present, absent]
    default: present
  name:
    description:
      - Image to remove with O(state=absent), C(<server>-<YYYYMMDD-HHMMSS>) or C(<server>-latest).
    type: str
  force:
    description:
      - With O(state=absent), remove the image even when it is the latest; the newest remaining image then becomes the latest.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Validates the object and reports the same C(changed), RV(pruned) and RV(latest) as a real run; writes and deletes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Importing the key that is already in the catalog changes nothing.
notes:
  - Two imports of the same server at the same time may overwrite each other's catalog; run one replication per server at a time.
seealso:
  - module: vmimage.replication.image_info
  - module: vmimage.replication.cos_upload
"""

EXAMPLES = r"""
- name: Register the uploaded image as web01-latest, keep a week
  vmimage.replication.image_import:
    cos: "{{ cos }}"
    bucket: dr-images
    server: web01
    key: "{{ upload.key }}"
    sha256: "{{ upload.sha256 }}"
    snapshot_time: "{{ snap.snapshot.created }}"
    keep_last: 7
    keep_days: 14

- name: Remove one image
  vmimage.replication.image_import:
    cos: "{{ cos }}"
    bucket: dr-images
    server: web01
    name: web01-20260301-020000
    state: absent
"""

RETURN = r"""
changed:
  description: Whether the catalog was (or in check mode would be) changed - an image added, removed or pruned, or the latest moved.
  returned: always
  type: bool
  sample: true
image:
  description: The image imported or removed; empty when O(state=absent) found nothing to remove.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the image, C(<server>-<YYYYMMDD-HHMMSS>) of its snapshot time.
      type: str
      sample: web01-20260310-120000
    key:
      description: Key of the image object.
      type: str
      sample: images/web01/web01-20260310-120000.qcow2
    sha256:
      description: sha256 of the image object.
      type: str
      sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    snapshot_time:
      description: UTC time of the snapshot.
      type: str
      sample: "2026-03-10T12:00:00Z"
    size:
      description: Size of the object in bytes.
      type: int
      sample: 231735296
    format:
      description: Format of the image.
      type: str
      sample: qcow2
    source_fingerprint:
      description: Identity of the source volume's state, when known.
      type: str
      sample: "536870912:1773144000000000000:1234567"
    guest_sha256:
      description:
        - The guest digest (C(vmimage-guest-v1), docs/data-path.md) of the image's content, recorded by
          M(vmimage.replication.image_upload) on the object; null when the object has none.
        - A re-run that reads the same content does not import it again (the replicate_server role).
      type: str
      sample: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
latest:
  description: The image C(<server>-latest) resolves to after this run (same keys as RV(image)), null when there is none.
  returned: always
  type: dict
  sample: {name: web01-20260310-120000, key: images/web01/web01-20260310-120000.qcow2, format: qcow2}
previous_latest:
  description:
    - The image that was the latest before this run, when this run moved the latest; it keeps its own name. Null otherwise.
  returned: always
  type: dict
  sample: {name: web01-20260309-120000, key: images/web01/web01-20260309-120000.qcow2, format: qcow2}
pruned:
  description: Names of the images pruned (their objects deleted), oldest first.
  returned: always
  type: list
  elements: str
  sample: [web01-20260301-120000]
images:
  description: The images of the server in the catalog after this run, oldest first (same keys as RV(image)).
  returned: always
  type: list
  elements: dict
  sample: [{name: web01-20260310-120000, key: images/web01/web01-20260310-120000.qcow2, format: qcow2}]
object_deleted:
  description: Whether the object O(key) was (in check mode, would be) deleted after the import (O(keep_object=false)).
  returned: state is present
  type: bool
  sample: true
orphaned:
  description:
    - Images dropped from the catalog (pruned or removed) whose object could not be deleted; the objects are still in the bucket.
    - Empty in check mode and when every delete succeeded.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the image that was dropped from the catalog.
      type: str
      sample: web01-20260301-120000
    key:
      description: Key of the object left in the bucket.
      type: str
      sample: images/web01/web01-20260301-120000.qcow2
    msg:
      description: Why the delete failed.
      type: str
      sample: "Failed to delete image s3://dr-images/images/web01/web01-20260301-120000.qcow2 at https://s3.example: AccessDenied: ..."
  sample: []
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    if p["keep_last"] < 1:
        raise ReplicationError("Failed to import image into bucket %s: keep_last is %d; keep at least 1 image" % (p["bucket"], p["keep_last"]))
    if p["keep_days"] is not None and p["keep_days"] < 0:
        raise ReplicationError("Failed to import image into bucket %s: keep_days is %d; give 0 or more days" % (p["bucket"], p["keep_days"]))
    target = _providers.target(p)
    if p["state"] == "absent":
        result = target.remove_image(p["name"], force=p["force"], check_mode=module.check_mode)
    else:
        if not p["keep_object"]:
            _providers.check_release(target, p["key"])
        result = target.import_image(
            p["key"], sha256=p["sha256"], snapshot_time=p["snapshot_time"], source_fingerprint=p["source_fingerprint"],
            keep_last=p["keep_last"], keep_days=p["keep_days"], check_mode=module.check_mode, verify_digest=p["verify_digest"],
        )
        result["object_deleted"] = False
        if not p["keep_object"]:
            result["object_deleted"], warning = _providers.release_object(target, p["key"], check_mode=module.check_mode)
            if warning:
                module.ansible.warn(warning)
    for orphan in result["orphaned"]:
        module.ansible.warn("%s; the catalog no longer lists it, delete s3://%s/%s by hand" % (orphan["msg"], p["bucket"], orphan["key"]))
    return result


def main():
    spec = dict(
        key=dict(type="str", no_log=False),
        snapshot_time=dict(type="str"),
        sha256=dict(type="str"),
        source_fingerprint=dict(type="str"),
        verify_digest=dict(type="bool", default=True),
        keep_object=dict(type="bool", default=True),
        keep_last=dict(type="int", default=7),
        keep_days=dict(type="int"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        name=dict(type="str"),
        force=dict(type="bool", default=False),
    )
    module = ReplicationModule(spec, groups=("cos", "catalog"), required_if=[("state", "present", ["key"]), ("state", "absent", ["name"])])
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    module.run(run)


if __name__ == "__main__":
    main()
