#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pvs_image_info
short_description: List a server's images in an IBM Power Virtual Server workspace and the latest
version_added: 0.1.0
description:
  - Lists the images of a server imported by M(vmimage.replication.pvs_import) into a Power Virtual Server workspace (those
    named C(<server>-<YYYYMMDD-HHMMSS>)), oldest first, and the latest - the newest active one. PowerVS cannot rename
    images, so the latest is resolved from the names and the images' state, not from a C(<server>-latest) name.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cloud-sdk-core
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.catalog
  - vmimage.replication.catalog.info_module
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
options:
  target:
    description:
      - Always V(powervs) for this module.
    type: str
    choices: [powervs]
    default: powervs
  bucket:
    description:
      - Not used to list images; accepted so that the options of M(vmimage.replication.pvs_import) can be shared.
    type: str
    required: false
  cos:
    description:
      - Not used to list images; accepted so that the options of M(vmimage.replication.pvs_import) can be shared.
    type: dict
    required: false
seealso:
  - module: vmimage.replication.pvs_import
"""

EXAMPLES = r"""
- name: The latest import of aix72-base
  vmimage.replication.pvs_image_info:
    server: aix72-base
    powervs:
      workspace_id: 0a1b2c3d-0000-4000-8000-000000000000
      crn: "crn:v1:bluemix:public:power-iaas:dal10:a/abc:0a1b2c3d-0000-4000-8000-000000000000::"
      region: us-south
  register: pvs

- name: Show its id
  ansible.builtin.debug:
    msg: "{{ pvs.latest.id if pvs.latest else 'no image yet' }}"
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
  sample: false
images:
  description: The active images of the server, oldest first (keys of RV(vmimage.replication.pvs_import#module:image)).
  returned: always
  type: list
  elements: dict
  sample: [{name: aix72-base-20260310-120000, id: 5c1a0ef2-8e2e-4c38-a0e0-8bb0a4b1f1e3, status: active, snapshot_time: "2026-03-10T12:00:00Z"}]
latest:
  description: The newest active image, null when there is none.
  returned: always
  type: dict
  sample: {name: aix72-base-20260310-120000, id: 5c1a0ef2-8e2e-4c38-a0e0-8bb0a4b1f1e3, status: active}
orphans:
  description: Images of the server that are not active (a failed or running import).
  returned: always
  type: list
  elements: dict
  sample: []
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _powervs, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._module import COS_SPEC


def run(module):
    return _providers.target(module.params).info()


def main():
    spec = dict(bucket=dict(type="str", required=False), cos=dict(COS_SPEC["cos"], required=False))
    _powervs.new_module(spec, "list images in PowerVS", groups=("catalog",)).run(run)


if __name__ == "__main__":
    main()
