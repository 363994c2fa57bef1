#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: openstack_cleanup
short_description: Remove what killed replications left in an OpenStack region
version_added: 0.3.0
description:
  - Finds, by the collection's marks, what an interrupted replication left in the region of O(openstack.region_name) and is
    older than O(older_than) seconds, and removes it.
  - Temporary volumes made for a conversion host (metadata C(created-by=vmimage.replication) and C(conversion-host)), with
    their attachments.
  - The collection's Cinder snapshots that never became C(available) (C(creating), C(error)). An available one is kept and
    listed in RV(kept) - its metadata does not tell a snapshot taken only for a copy from one an operator keeps.
  - The collection's Glance images that never became C(active) (C(queued), C(saving), C(killed), C(importing)) - snapshot
    images of image-backed servers and imports into this region's Glance. Active ones are kept and listed.
  - Nothing without the collection's marks is ever touched. A region without a block-storage endpoint is searched for images only.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - openstacksdk
extends_documentation_fragment:
  - vmimage.replication.openstack
options:
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
  - module: vmimage.replication.vpc_cleanup
"""

EXAMPLES = r"""
- name: Remove leftovers older than an hour in RegionOne
  vmimage.replication.openstack_cleanup:
    openstack:
      cloud: prod
      region_name: RegionOne
    older_than: 3600
  register: openstack_leftovers
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
  description: Names of the unfinished Cinder snapshots removed.
  returned: always
  type: list
  elements: str
  sample: [web01-20260310-120000]
images:
  description: Names of the unfinished Glance images removed.
  returned: always
  type: list
  elements: str
  sample: [web01-20260310-120000]
kept:
  description: The collection's resources old enough but kept (available snapshots, active images).
  returned: always
  type: list
  elements: str
  sample: [snapshot web01-20260309-120000]
"""

import datetime

from ansible_collections.vmimage.replication.plugins.module_utils import _openstack_cleanup, _openstack_cloud, _provider_options
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    module.require_library("openstacksdk", _openstack_cloud.IMPORT_ERROR)
    cleanup = _openstack_cleanup.Cleanup(module.params)
    found = cleanup.find(module.params["older_than"], datetime.datetime.now(datetime.timezone.utc))
    removed = cleanup.remove(found, check_mode=module.check_mode)
    return dict(removed, changed=bool(removed["volumes"] or removed["snapshots"] or removed["images"]))


def main():
    spec = dict(_provider_options.OPENSTACK, older_than=dict(type="int", default=86400))
    ReplicationModule(spec, action="remove leftovers").run(run)


if __name__ == "__main__":
    main()
