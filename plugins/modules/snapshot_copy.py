#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_copy
short_description: Copy snapshots to other regions and keep them for a retention
version_added: 0.1.0
description:
  - Copies the snapshots that a selector matches (tags, volume ids, or the EBS snapshots of a Velero backup schedule) from
    O(region) to each of O(destination_regions), only those not already there, and deletes the copies past the retention.
  - No database - every copy carries its state in tags (C(created-by=vmimage.replication), the origin snapshot id and region,
    its start time, the volume's id, type, IOPS, size and zone, the selector). Retention and "already copied" are read back
    from those tags, and a snapshot without them is never touched.
  - Several copies run at once, at most O(max_concurrent_copies) per destination; when AWS refuses one more
    (C(ResourceLimitExceeded), throttling) the module waits for copies in flight and tries again.
  - O(provider=aws) copies EBS snapshots; O(provider=ibm_vpc) copies IBM Cloud VPC block storage snapshots with VPC's
    cross-region copy (a new snapshot in the destination made from the source's CRN), the state in C(user_tags)
    (C(vmimage.replication.<name>:<value>), as IBM tags allow no C(/) or C(=)).
  - The wait is bounded in seconds (O(wait_timeout)), not in attempts, so copies that take hours succeed.
  - C(changed) is true only when something was copied or deleted. In check mode the result lists what would be copied and deleted.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.aws
  - vmimage.replication.aws.attributes
  - vmimage.replication.ibm_vpc
options:
  provider:
    description:
      - The cloud of the snapshots. With V(ibm_vpc), O(region) (else O(ibm_vpc.region)) is the source region and the
        connection is O(ibm_vpc); O(velero), O(kms_key_id) and O(encrypted) are AWS only.
    type: str
    choices: [aws, ibm_vpc]
    default: aws
  encryption_key:
    description:
      - O(provider=ibm_vpc) - the root key for the copies of snapshots encrypted with a customer root key (C(user_managed)), the
        CRN of a Key Protect or Hyper Protect Crypto Services key (C(crn:v1:...:kms:...:key:<id>)) that the destination
        region may use. VPC requires it for those copies and refuses it for the others, which stay provider managed; a
        C(user_managed) snapshot without it fails before anything is copied.
    type: str
  destination_regions:
    description:
      - The regions to copy to; the source region O(region) is not allowed here.
    type: list
    elements: str
    required: true
  tags:
    description:
      - Select the source snapshots that carry all of these tags (with O(provider=ibm_vpc), the user tags C(<key>:<value>)).
    type: dict
  volume_ids:
    description:
      - Select the source snapshots of these volumes.
    type: list
    elements: str
  velero:
    description:
      - Select the EBS snapshots of the backups of a Velero schedule, read from Velero's bucket
        (C(backups/<backup>/velero-backup.json) and C(backups/<backup>/<backup>-volumesnapshots.json.gz)).
      - The bucket is read with the same AWS credentials and O(endpoint_url).
    type: dict
    suboptions:
      bucket:
        description: The bucket of Velero's backup storage location.
        type: str
        required: true
      prefix:
        description: The prefix of the backup storage location inside the bucket, if any.
        type: str
        default: ""
      schedule:
        description:
          - The Velero schedule; its completed backups are those labelled C(velero.io/schedule-name=<schedule>).
          - One of O(velero.schedule) and O(velero.backup) is required.
        type: str
      backup:
        description: One backup by name, instead of a schedule.
        type: str
      bucket_region:
        description: The bucket's region, if not O(region).
        type: str
  retention_days:
    description:
      - Delete a copy whose origin snapshot is older than this many days (the newest O(retention_count) copies of each
        volume are kept whatever their age; with O(retention_days) alone, the newest copy of each volume is kept).
      - Must be above 0.
    type: int
  retention_count:
    description:
      - Keep at most this many copies of each volume in each destination (older ones are deleted, subject to O(retention_days)).
      - Must be at least 1.
    type: int
  kms_key_id:
    description:
      - Encrypt the copies with this KMS key (id, alias or ARN). The key must exist in every destination region.
    type: str
  encrypted:
    description:
      - Encrypt the copies with the account's default EBS key when O(kms_key_id) is not set.
    type: bool
    default: false
  max_concurrent_copies:
    description:
      - Copies in flight at once per destination region, from 1 to 20 (AWS's quota of concurrent snapshot copies
        per destination region is 20 and not adjustable, shared with every other copy the account makes). With
        O(provider=ibm_vpc) a copy refused with HTTP 429 after the SDK's retries lowers the limit for the rest of the run.
    type: int
    default: 5
  disabled:
    description:
      - Do nothing and say so (C(changed=false), RV(disabled=true)); for turning a scheduled job off without removing it.
      - If not set, the value of the E(SNAPSHOT_COPY_DISABLED) environment variable (V(true), V(1), V(yes) disable).
    type: bool
    default: false
  wait:
    description:
      - Wait until every copy completed. With V(false), start at most O(max_concurrent_copies) copies per destination and
        return; the next run sees them by their tags and starts the rest. Retention deletes only after copies complete.
    type: bool
    default: true
  wait_timeout:
    description:
      - How long to wait for all copies, in seconds (6 hours by default).
    type: int
    default: 21600
  wait_sleep:
    description:
      - Seconds between two looks at the copies in flight.
    type: float
    default: 15.0
notes:
  - Only completed source snapshots are copied. A missing copy that the retention would delete at once is not made
    (listed in RV(skipped_too_old)).
  - A selector that matches no snapshot is not an error - the result says V(nothing to copy).
seealso:
  - module: vmimage.replication.snapshot_copy_info
  - module: vmimage.replication.snapshot_restore
"""

EXAMPLES = r"""
- name: Copy the EBS snapshots of the Velero schedule "daily" to Frankfurt, keep 14 days
  vmimage.replication.snapshot_copy:
    region: eu-west-1
    destination_regions: [eu-central-1]
    velero:
      bucket: velero-backups
      schedule: daily
    retention_days: 14
    kms_key_id: alias/dr-snapshots

- name: Copy the snapshots tagged backup=nightly, keep the last 7 of each volume, preview only
  vmimage.replication.snapshot_copy:
    region: us-east-1
    destination_regions: [us-west-2]
    tags:
      backup: nightly
    retention_count: 7
  check_mode: true
  register: preview

- name: Copy the VPC snapshots tagged backup:nightly from Dallas to Frankfurt, keep 14 days, encrypted with a Key Protect key
  vmimage.replication.snapshot_copy:
    provider: ibm_vpc
    region: us-south
    destination_regions: [eu-de]
    tags:
      backup: nightly
    retention_days: 14
    encryption_key: "crn:v1:bluemix:public:kms:eu-de:a/1234567890abcdef:11112222-3333-4444-5555-666677778888:key:aaaabbbb-cccc-dddd-eeee-ffff00001111"
"""

RETURN = r"""
changed:
  description: True when a copy was made or deleted (in check mode, would be).
  returned: always
  type: bool
  sample: true
msg:
  description: V(nothing to copy ...) when the selector matched no completed snapshot; V(disabled ...) when disabled.
  returned: when nothing was selected, or disabled
  type: str
  sample: "nothing to copy: the selector tags:backup=nightly matches no completed snapshot in us-east-1"
disabled:
  description: True when O(disabled) (or E(SNAPSHOT_COPY_DISABLED)) turned the run off.
  returned: always
  type: bool
  sample: false
selector:
  description: The selector as written in the C(vmimage.replication/selector) tag of every copy.
  returned: unless disabled
  type: str
  sample: "velero:daily"
source_snapshots:
  description: Ids of the source snapshots the selector matched.
  returned: unless disabled
  type: list
  elements: str
  sample: [snap-0123456789abcdef0]
copied:
  description: The copies made (in check mode, those that would be; V(id) is then null). With O(wait=false), also those still pending.
  returned: unless disabled
  type: list
  elements: dict
  sample:
    - {id: snap-0fedcba9876543210, region: eu-central-1, state: completed, origin_snapshot_id: snap-0123456789abcdef0,
       volume_id: vol-0123456789abcdef0, start_time: "2026-03-10T01:00:00Z"}
deleted:
  description: The copies deleted for the retention (in check mode, that would be).
  returned: unless disabled
  type: list
  elements: dict
  sample:
    - {id: snap-0aaaabbbbccccdddd, region: eu-central-1, origin_snapshot_id: snap-0999988887777aaaa, start_time: "2026-02-01T01:00:00Z"}
pending:
  description: Copies started but not complete, and copies not started yet (O(wait=false)).
  returned: unless disabled
  type: list
  elements: dict
  sample: []
present:
  description: The copies of this job already at the destinations before the run (V(start_time) is their origin's).
  returned: unless disabled
  type: list
  elements: dict
  sample:
    - {id: snap-0fedcba9876543210, region: eu-central-1, state: completed, origin_snapshot_id: snap-0123456789abcdef0,
       start_time: "2026-03-10T01:00:00Z"}
skipped_too_old:
  description: Source snapshots not copied because the retention would delete the copy at once.
  returned: unless disabled
  type: list
  elements: str
  sample: []
"""

import datetime

from ansible.module_utils.basic import env_fallback
from ansible_collections.vmimage.replication.plugins.module_utils import _aws, _ibm_vpc_client, _ibm_vpc_copy, _snapshot_copy, _velero
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    if module.params["provider"] == "ibm_vpc":
        return _run_ibm_vpc(module)
    with _aws.errors(module.action):
        return _run(module)


def _run_ibm_vpc(module):
    p = module.params
    if p["disabled"]:
        return dict(changed=False, disabled=True, msg="disabled (option disabled or SNAPSHOT_COPY_DISABLED): nothing copied or deleted")
    for aws_only in ("velero", "kms_key_id"):
        if p[aws_only]:
            raise ReplicationError("Failed to plan copies: %s is for provider aws; with ibm_vpc select by tags or volume_ids%s"
                                   % (aws_only, " and encrypt with encryption_key" if aws_only == "kms_key_id" else ""))
    if not 1 <= p["max_concurrent_copies"] <= 20:
        raise ReplicationError("Failed to plan copies: max_concurrent_copies=%s is outside 1..20" % p["max_concurrent_copies"])
    selector = _snapshot_copy.selector_label(tags=p["tags"], volume_ids=p["volume_ids"])
    _snapshot_copy.check_retention(p["retention_count"], p["retention_days"])
    backend = _ibm_vpc_copy.CopyBackend(p, selector)
    backend.check_keys()
    backend.check_regions([backend.region] + list(p["destination_regions"]))
    now = datetime.datetime.now(datetime.timezone.utc)
    result = _snapshot_copy.execute(backend, dict(p, region=backend.region), module.check_mode, now)
    result["disabled"] = False
    return result


def _run(module):
    p = module.params
    if p["disabled"]:
        return dict(changed=False, disabled=True, msg="disabled (option disabled or SNAPSHOT_COPY_DISABLED): nothing copied or deleted")
    if not 1 <= p["max_concurrent_copies"] <= 20:
        raise ReplicationError("Failed to plan copies: max_concurrent_copies=%s is outside 1..20; AWS allows 20 concurrent snapshot copies "
                               "per destination region (not adjustable), shared with the account's other copies" % p["max_concurrent_copies"])
    velero = p["velero"]
    selector = _snapshot_copy.selector_label(tags=p["tags"], volume_ids=p["volume_ids"],
                                             velero=velero and (velero["schedule"] or "backup=%s" % velero["backup"]))
    backend = _aws.CopyBackend(p, selector)
    _snapshot_copy.check_retention(p["retention_count"], p["retention_days"])
    backend.check_keys()
    sources = None
    if velero:
        sources = _velero.sources(backend, velero)
    now = datetime.datetime.now(datetime.timezone.utc)
    result = _snapshot_copy.execute(backend, p, module.check_mode, now, sources=sources)
    result["disabled"] = False
    return result


def main():
    spec = dict(_aws.AWS_OPTIONS)
    spec.update(_ibm_vpc_client.OPTIONS)
    spec.update(
        provider=dict(type="str", choices=["aws", "ibm_vpc"], default="aws"),
        encryption_key=dict(type="str", no_log=False),
        destination_regions=dict(type="list", elements="str", required=True),
        tags=dict(type="dict"),
        volume_ids=dict(type="list", elements="str"),
        velero=dict(type="dict", options=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default=""),
            schedule=dict(type="str"),
            backup=dict(type="str"),
            bucket_region=dict(type="str"),
        ), required_one_of=[("schedule", "backup")], mutually_exclusive=[("schedule", "backup")]),
        retention_days=dict(type="int"),
        retention_count=dict(type="int"),
        kms_key_id=dict(type="str", no_log=False),
        encrypted=dict(type="bool", default=False),
        max_concurrent_copies=dict(type="int", default=5),
        disabled=dict(type="bool", default=False, fallback=(env_fallback, ["SNAPSHOT_COPY_DISABLED"])),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=21600),
        wait_sleep=dict(type="float", default=15.0),
    )
    ReplicationModule(
        spec, action="copy snapshots",
        required_one_of=[("tags", "volume_ids", "velero"), ("retention_days", "retention_count")],
        mutually_exclusive=[("tags", "volume_ids", "velero")] + _aws.AWS_CONSTRAINTS["mutually_exclusive"],
        required_together=_aws.AWS_CONSTRAINTS["required_together"],
    ).run(run)


if __name__ == "__main__":
    main()
