#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_copy_info
short_description: List the snapshot copies made by M(vmimage.replication.snapshot_copy)
version_added: 0.1.0
description:
  - Lists the copies in O(region) that carry C(created-by=vmimage.replication), with what their tags say - origin snapshot
    and region, the origin's start time, volume id / type / IOPS / size / zone, selector, and the Velero backup and claim they
    belong to - oldest first.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.aws
  - vmimage.replication.aws.attributes
  - vmimage.replication.ibm_vpc
options:
  provider:
    description:
      - The cloud of the copies. With V(ibm_vpc) the copies are VPC snapshots of O(region) (else O(ibm_vpc.region)) whose user tags carry
        C(created-by:vmimage.replication); their selector is listed as its digest, and the Velero and claim filters do not apply.
    type: str
    choices: [aws, ibm_vpc]
    default: aws
  origin_region:
    description: Only copies of snapshots of this region.
    type: str
  velero_backup:
    description: Only copies of the snapshots of this Velero backup.
    type: str
  pvc_name:
    description: Only copies of volumes made for this PersistentVolumeClaim.
    type: str
  pvc_namespace:
    description: Only copies of volumes made for claims of this namespace.
    type: str
seealso:
  - module: vmimage.replication.snapshot_copy
  - module: vmimage.replication.snapshot_restore
"""

EXAMPLES = r"""
- name: The copies of the claim data-db-0 in Frankfurt
  vmimage.replication.snapshot_copy_info:
    region: eu-central-1
    pvc_name: data-db-0
  register: copies

- name: The VPC snapshot copies in Frankfurt made from Dallas
  vmimage.replication.snapshot_copy_info:
    provider: ibm_vpc
    region: eu-de
    origin_region: us-south
  register: vpc_copies
"""

RETURN = r"""
changed:
  description: Always false.
  returned: always
  type: bool
  sample: false
snapshots:
  description: The copies, oldest origin first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: snap-0fedcba9876543210
      region: eu-central-1
      state: completed
      origin_snapshot_id: snap-0123456789abcdef0
      origin_region: eu-west-1
      start_time: "2026-03-10T01:00:00Z"
      volume_id: vol-0123456789abcdef0
      volume_type: gp3
      iops: 3000
      size: 8
      zone: eu-west-1a
      selector: "velero:daily"
      velero_backup: daily-20260310010000
      pvc_name: data-db-0
      pvc_namespace: shop
      tags: {velero.io/backup: daily-20260310010000}
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _aws, _ibm_vpc_client, _ibm_vpc_copy
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    if module.params["provider"] == "ibm_vpc":
        return _run_ibm_vpc(module.params)
    with _aws.errors(module.action):
        return _run(module)


def _run(module):
    p = module.params
    session = _aws.Session(p)
    region = session.check_region(p["region"], "region")
    filters = []
    for option, tag in (("velero_backup", "velero.io/backup"), ("pvc_name", _aws.PVC_NAME), ("pvc_namespace", _aws.PVC_NAMESPACE)):
        if p[option]:
            filters.append({"Name": "tag:%s" % tag, "Values": [p[option]]})
    records = _aws.copy_records(session, region, filters)
    if p["origin_region"]:
        records = [r for r in records if r["origin_region"] == p["origin_region"]]
    for record in records:
        record.update(velero_backup=record["tags"].get("velero.io/backup"), pvc_name=record["tags"].get(_aws.PVC_NAME),
                      pvc_namespace=record["tags"].get(_aws.PVC_NAMESPACE))
    return dict(changed=False, snapshots=records)


def _run_ibm_vpc(p):
    for aws_only in ("velero_backup", "pvc_name", "pvc_namespace"):
        if p[aws_only]:
            raise ReplicationError("Failed to list snapshot copies: %s is for provider aws (VPC copies carry no Velero or claim tags)" % aws_only)
    region = p["region"] or _ibm_vpc_client.settings(p).get("region")
    if not region:
        raise ReplicationError("Failed to list snapshot copies: no region; set region or ibm_vpc.region")
    return dict(changed=False, snapshots=_ibm_vpc_copy.copy_records(p, region, p["origin_region"]))


def main():
    spec = dict(_aws.AWS_OPTIONS)
    spec.update(_ibm_vpc_client.OPTIONS)
    spec.update(provider=dict(type="str", choices=["aws", "ibm_vpc"], default="aws"))
    spec.update(origin_region=dict(type="str"), velero_backup=dict(type="str"), pvc_name=dict(type="str"), pvc_namespace=dict(type="str"))
    ReplicationModule(spec, action="list snapshot copies", mutually_exclusive=_aws.AWS_CONSTRAINTS["mutually_exclusive"],
                      required_together=_aws.AWS_CONSTRAINTS["required_together"]).run(run)


if __name__ == "__main__":
    main()
