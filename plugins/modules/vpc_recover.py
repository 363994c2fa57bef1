#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vpc_recover
short_description: Recover servers in the IBM Cloud VPC DR region from their C(<server>-latest) images or snapshot copies
version_added: 0.1.0
description:
  - In the region of O(ibm_vpc.region) (the DR region), makes a VPC O(vpc_name), a subnet C(<vpc_name>-<zone>) per zone used
    and one instance per server of O(servers) from its C(<server>-latest) image, with the source's profile, in the DR zone of
    the source's zone (O(zone_map), else the same zone number in the DR region).
  - Idempotent - what exists is kept; a re-run changes nothing. Every server's image (or snapshot) is checked before anything is made.
  - VPCs, subnets and instances carry no user tags in the VPC API, so an instance is the collection's when its boot volume's
    user_tags say C(created-by:vmimage.replication) and C(recover-vpc:<vpc_name>). An instance of a server's name that is
    not the collection's is an error, never replaced.
  - O(state=absent) deletes the collection's instances of the VPC, then its subnets C(<vpc_name>-<zone>) that no other
    instance uses, then the VPC when nothing else is left in it; what it keeps is listed in RV(kept).
  - With O(wait=false), new instances are not waited for to be C(running); the VPC and subnets always are (instances need them),
    and O(state=absent) always waits (a subnet can go only once its instances are gone).
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-vpc
  - ibm-cloud-sdk-core
extends_documentation_fragment:
  - vmimage.replication.ibm_vpc
  - vmimage.replication.wait
options:
  vpc_name:
    description: Name of the VPC in the DR region that holds the recovered servers.
    type: str
    required: true
  servers:
    description:
      - The servers to recover, as M(vmimage.replication.server_info) describes them in the source region. Required with
        O(state=present).
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the server; its image is C(<name>-latest) and the instance gets this name.
        type: str
        required: true
      profile:
        description: Instance profile of the source server (for example C(bx2-2x8)).
        type: str
        required: true
      zone:
        description: Zone of the source server (for example C(us-south-1)).
        type: str
        required: true
  source:
    description:
      - What each instance boots from. V(image) - the server's C(<server>-latest) image (replication_mode image).
      - V(snapshot) - the newest stable snapshot of the server that the collection has in the DR region (the copies
        replication_mode snapshot_copy makes carry C(source-server:<server>)); the boot volume is made from it.
    type: str
    choices: [image, snapshot]
    default: image
  zone_map:
    description: "Source zone to DR zone (for example C({us-south-1: eu-de-2})); unmapped zones keep their number in the DR region."
    type: dict
    default: {}
  subnet_address_count:
    description: Addresses of each new subnet (C(total_ipv4_address_count), a power of two).
    type: int
    default: 256
  state:
    description: V(present) makes what is missing; V(absent) removes what the collection made.
    type: str
    choices: [present, absent]
    default: present
attributes:
  check_mode:
    support: full
    description: Reports what would be made or removed, with the same C(changed) as a real run; changes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: A second run changes nothing.
seealso:
  - module: vmimage.replication.server_info
  - module: vmimage.replication.image_import
"""

EXAMPLES = r"""
- name: Recover web01 in eu-de
  vmimage.replication.vpc_recover:
    ibm_vpc:
      region: eu-de
    vpc_name: dr-vpc
    servers:
      - {name: web01, profile: bx2-2x8, zone: us-south-1}
    zone_map:
      us-south-1: eu-de-1

- name: List what a teardown would remove
  vmimage.replication.vpc_recover:
    ibm_vpc:
      region: eu-de
    state: absent
    vpc_name: dr-vpc
  check_mode: true
"""

RETURN = r"""
changed:
  description: Whether something was (or in check mode would be) made or removed.
  returned: always
  type: bool
  sample: true
vpc:
  description: The name of the VPC made or removed; null when it was neither.
  returned: always
  type: str
  sample: dr-vpc
subnets:
  description: The subnets made or removed.
  returned: always
  type: list
  elements: str
  sample: [dr-vpc-eu-de-1]
instances:
  description: The instances made or removed.
  returned: always
  type: list
  elements: str
  sample: [web01]
kept:
  description: What O(state=absent) left because the collection did not make it (or an instance still uses it).
  returned: when state=absent
  type: list
  elements: str
  sample: ["instance jumphost", "subnet dr-vpc-eu-de-1"]
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client, _ibm_vpc_recover
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    recover = _ibm_vpc_recover.Recover(p)
    if p["state"] == "absent":
        result, changed = recover.absent(p["vpc_name"], check_mode=module.check_mode)
    else:
        result, changed = recover.present(p["vpc_name"], p["servers"], p["zone_map"], p["subnet_address_count"], check_mode=module.check_mode)
    return dict(result, changed=changed)


def main():
    spec = dict(_ibm_vpc_client.OPTIONS)
    spec.update(
        vpc_name=dict(type="str", required=True),
        servers=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            profile=dict(type="str", required=True),
            zone=dict(type="str", required=True),
        )),
        zone_map=dict(type="dict", default={}),
        source=dict(type="str", choices=["image", "snapshot"], default="image"),
        subnet_address_count=dict(type="int", default=256),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    ReplicationModule(spec, groups=("wait",), action="recover servers", required_if=[("state", "present", ["servers"])]).run(run)


if __name__ == "__main__":
    main()
