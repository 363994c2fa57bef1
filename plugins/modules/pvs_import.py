#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pvs_import
short_description: Import an OVA from a bucket into an IBM Power Virtual Server workspace, follow the job, keep the latest and prune
version_added: 0.1.0
description:
  - Imports the OVA object O(key), uploaded beforehand by M(vmimage.replication.cos_upload), into the boot image catalog of a
    Power Virtual Server workspace (C(POST /pcloud/v1/cloud-instances/{id}/cos-images)), and follows the import job
    (C(/pcloud/v1/cloud-instances/{id}/jobs/{job_id})) until it completes or fails, writing its state, progress and message
    to O(progress_file) while it runs.
  - The PowerVS images API lists, gets and deletes images but cannot rename them. So the image is named
    C(<server>-<YYYYMMDD-HHMMSS>) after its export time (the object's C(snapshot-time) metadata or O(snapshot_time)) and the
    latest is the newest active image named so (M(vmimage.replication.pvs_image_info) returns it). An image of that name
    already active is the same export and is not imported again.
  - Images past retention (O(keep_last), O(keep_days)) among those named C(<server>-<YYYYMMDD-HHMMSS>) are deleted only after
    the new image is active; a failed job's image is deleted, so a failed import leaves the catalog as it was.
  - Cancelled (SIGTERM, or O(abandon_after) seconds without a touch of O(heartbeat_file) when run with C(async)), it
    cannot stop the PowerVS job; so it follows the job to its end within O(wait_timeout) and deletes the image the job
    made, and a cancelled import also leaves the catalog as it was.
  - Authentication is IBM Cloud IAM (API key, token renewed before it expires); calls answered 429 or 5xx are retried with
    backoff (Retry-After honoured); waits are bounded by O(wait_timeout).
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cloud-sdk-core
  - ibm-cos-sdk
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.catalog
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
  - vmimage.replication.watchdog
options:
  target:
    description:
      - Always V(powervs) for this module.
    type: str
    choices: [powervs]
    default: powervs
  key:
    description:
      - Key of the OVA object, normally C(<prefix><server>/<server>-<YYYYMMDD-HHMMSS>.ova). Required with O(state=present).
    type: str
  snapshot_time:
    description:
      - UTC export time, ISO 8601; defaults to the object's C(snapshot-time) metadata (both must agree when both are there).
    type: str
  sha256:
    description:
      - Expected sha256 of the OVA; the import fails unless the object's C(sha256) metadata is the same.
    type: str
  keep_last:
    description: Number of newest images of the server kept (the latest included). At least 1.
    type: int
    default: 7
  keep_days:
    description: Also keep every image younger than this many days.
    type: int
  state:
    description: V(present) imports O(key); V(absent) deletes image O(name).
    type: str
    choices: [present, absent]
    default: present
  name:
    description: Image to delete with O(state=absent), C(<server>-<YYYYMMDD-HHMMSS>) or C(<server>-latest).
    type: str
  force:
    description: With O(state=absent), delete the image even when it is the latest.
    type: bool
    default: false
  progress_file:
    description:
      - JSON file the job's state, progress (percent) and message are written to while it runs (read by M(vmimage.replication.job_progress)).
    type: path
  wait_timeout:
    description: Longest wait for the import job, in seconds. Imports may stay queued or running for hours.
    type: int
    default: 21600
  wait_sleep:
    description: Seconds between two looks at the job.
    type: float
    default: 30.0
attributes:
  check_mode:
    support: full
    description: Validates the object and the workspace, and says which image it would import and which it would prune; changes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: An image of the same export already active is not imported again.
seealso:
  - module: vmimage.replication.pvs_image_info
  - module: vmimage.replication.powervc_export
  - module: vmimage.replication.cos_upload
"""

EXAMPLES = r"""
- name: Import the exported OVA into PowerVS, keep 5
  vmimage.replication.pvs_import:
    cos: "{{ cos }}"
    bucket: pvs-transit
    server: aix72-base
    key: "{{ upload.key }}"
    sha256: "{{ upload.sha256 }}"
    powervs:
      workspace_id: 0a1b2c3d-0000-4000-8000-000000000000
      crn: "crn:v1:bluemix:public:power-iaas:dal10:a/abc:0a1b2c3d-0000-4000-8000-000000000000::"
      region: us-south
      api_key: "{{ lookup('ansible.builtin.env', 'IBMCLOUD_API_KEY') }}"
      storage_type: tier3
      os_type: aix
    keep_last: 5
    progress_file: /tmp/import-progress.json
  register: imported
"""

RETURN = r"""
changed:
  description: Whether an image was (or in check mode would be) imported or deleted.
  returned: always
  type: bool
  sample: true
image:
  description: The image imported (or found already imported, or deleted); empty when nothing matched.
  returned: always
  type: dict
  sample: {name: aix72-base-20260310-120000, id: 5c1a0ef2-8e2e-4c38-a0e0-8bb0a4b1f1e3, key: images/aix72-base/aix72-base-20260310-120000.ova,
           format: ova, size: 20, sha256: 9f86d0, snapshot_time: "2026-03-10T12:00:00Z", source_fingerprint: null, status: active,
           storage_type: tier3, created: "2026-03-10T12:40:00.000Z"}
latest:
  description: The newest active image of the server after this run (same keys as RV(image)), null when there is none.
  returned: always
  type: dict
  sample: {name: aix72-base-20260310-120000, id: 5c1a0ef2-8e2e-4c38-a0e0-8bb0a4b1f1e3, status: active}
previous_latest:
  description: The image that was the latest before, when this run made a newer one the latest; null otherwise.
  returned: always
  type: dict
  sample: {name: aix72-base-20260309-120000, id: 0d9e1c3b-9a8b-4c7d-8e6f-5a4b3c2d1e0f, status: active}
pruned:
  description: Names of the images deleted past retention, oldest first.
  returned: always
  type: list
  elements: str
  sample: [aix72-base-20260301-120000]
images:
  description: The active images of the server after this run, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{name: aix72-base-20260310-120000, id: 5c1a0ef2-8e2e-4c38-a0e0-8bb0a4b1f1e3, status: active}]
orphaned:
  description: Images that should have been deleted but could not be (name, id, msg).
  returned: always
  type: list
  elements: dict
  sample: []
orphans:
  description: Images of the server named C(<server>-<YYYYMMDD-HHMMSS>) that are not active (failed or still importing).
  returned: always
  type: list
  elements: dict
  sample: []
job:
  description: The import job at its end (id, state, progress, message).
  returned: when an import job ran
  type: dict
  sample: {id: 6d8f7e0a-1b2c-4d3e-8f9a-0b1c2d3e4f5a, state: completed, status: completed, progress: 100.0, message: image imported}
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _powervs, _providers, _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, terminate_as_error


def run(module):
    p = module.params
    if p["keep_last"] < 1 or (p["keep_days"] is not None and p["keep_days"] < 0):
        raise ReplicationError("Failed to import image of %s into PowerVS: keep_last must be 1 or more and keep_days 0 or more" % p["server"])
    target = _providers.target(p)
    # A SIGTERM (a cancelled job) is an error, so a running import is undone instead of left half made.
    with terminate_as_error("import image of %s into PowerVS" % p["server"]):
        if p["state"] == "absent":
            result = target.remove_image(p["name"], force=p["force"], check_mode=module.check_mode)
        else:
            result = target.import_image(p["key"], sha256=p["sha256"], snapshot_time=p["snapshot_time"], keep_last=p["keep_last"],
                                         keep_days=p["keep_days"], check_mode=module.check_mode)
    for orphan in result["orphaned"]:
        module.ansible.warn("%s; delete image %s (%s) by hand" % (orphan["msg"], orphan["name"], orphan["id"]))
    return result


def main():
    spec = dict(
        key=dict(type="str", no_log=False),
        snapshot_time=dict(type="str"),
        sha256=dict(type="str"),
        keep_last=dict(type="int", default=7),
        keep_days=dict(type="int"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        name=dict(type="str"),
        force=dict(type="bool", default=False),
        progress_file=dict(type="path"),
        wait_timeout=dict(type="int", default=21600),
        wait_sleep=dict(type="float", default=30.0),
        **_watchdog.SPEC  # stops following the job when nobody follows this task (heartbeat_file, abandon_after)
    )
    _powervs.new_module(spec, "import image into PowerVS", groups=("cos", "catalog"), needs_cos=True,
                        required_if=[("state", "present", ["key"]), ("state", "absent", ["name"])]).run(_watchdog.guarded(run, "import into PowerVS", "key"))


if __name__ == "__main__":
    main()
