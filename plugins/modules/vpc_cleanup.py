#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vpc_cleanup
short_description: Remove what killed replications left in an IBM Cloud VPC region
version_added: 0.1.0
description:
  - Finds, by the collection's marks, what an interrupted replication left in the region of O(ibm_vpc.region) and is
    older than O(older_than) seconds, and removes it.
  - Temporary volumes made for a conversion host (user_tags C(created-by:vmimage.replication) and C(conversion-host)),
    with their attachments.
  - The collection's snapshots that never became C(stable) (C(pending), C(failed)). A stable snapshot of the collection is
    kept and listed in RV(kept) - its tags do not tell a snapshot taken only for a copy from one kept by retention.
  - Images in C(pending) or C(failed) named C(<server>-YYYYMMDD-HHMMSS) for a server of O(servers) (VPC images carry no
    user tags; the name is the collection's mark).
  - Nothing without the collection's marks is ever touched.
  - With O(wait=false), removed snapshots and images are not waited for to be gone; a volume always waits for its attachments to go.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-vpc
  - ibm-cloud-sdk-core
extends_documentation_fragment:
  - vmimage.replication.ibm_vpc
  - vmimage.replication.wait
options:
  servers:
    description: The servers whose unfinished images are looked for; without servers no image is removed.
    type: list
    elements: str
    default: []
  older_than:
    description: Only resources created at least this many seconds ago count (a run in progress is left alone).
    type: int
    default: 86400
attributes:
  check_mode:
    support: full
    description: Lists what would be removed, with the same C(changed) as a real run; removes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: A second run finds nothing left to remove.
seealso:
  - module: vmimage.replication.volume_attach
  - module: vmimage.replication.snapshot
"""

EXAMPLES = r"""
- name: Remove leftovers older than an hour in us-south
  vmimage.replication.vpc_cleanup:
    ibm_vpc:
      region: us-south
    servers: [web01, db01]
    older_than: 3600
  register: vpc_leftovers
"""

RETURN = r"""
changed:
  description: Whether something was (or in check mode would be) removed.
  returned: always
  type: bool
  sample: true
volumes:
  description: Names of the temporary volumes removed with their attachments.
  returned: always
  type: list
  elements: str
  sample: [web01-20260310-120000-conv]
snapshots:
  description: Names of the unfinished snapshots removed.
  returned: always
  type: list
  elements: str
  sample: [web01-20260310-120000]
images:
  description: Names of the pending or failed images removed.
  returned: always
  type: list
  elements: str
  sample: [web01-20260310-120000]
kept:
  description: The collection's resources old enough but kept (stable snapshots).
  returned: always
  type: list
  elements: str
  sample: [snapshot web01-20260309-120000]
"""

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_cleanup, _ibm_vpc_client
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    cleanup = _ibm_vpc_cleanup.Cleanup(p)
    found = cleanup.find(p["servers"], p["older_than"], datetime.datetime.now(datetime.timezone.utc))
    removed = cleanup.remove(found, check_mode=module.check_mode)
    return dict(removed, changed=bool(removed["volumes"] or removed["snapshots"] or removed["images"]))


def main():
    spec = dict(_ibm_vpc_client.OPTIONS)
    spec.update(
        servers=dict(type="list", elements="str", default=[]),
        older_than=dict(type="int", default=86400),
    )
    ReplicationModule(spec, groups=("wait",), action="remove leftovers").run(run)


if __name__ == "__main__":
    main()
