#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: server_info
short_description: Find a server, its boot volume, operating system and latest snapshot
version_added: 0.1.0
description:
  - The first stage of a replication - finds the server by name through its provider's adapter, and answers the same
    keys for every provider - its boot volume (id, size, profile, zone, fingerprint), every volume, its operating system
    and the newest snapshot the collection took of its boot volume.
  - An unknown or ambiguous server name fails, naming the server.
  - With O(provider=local), the server is its volume files given in O(volumes) (the boot volume first); their snapshots
    are looked up in O(snapshot_dir) when it is given.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.provider
  - vmimage.replication.catalog.info_module
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
options:
  server:
    description:
      - Name of the server. Letters, digits, V(.), V(_) and V(-).
    type: str
    required: true
  volumes:
    description:
      - Provider V(local) only, and required there - the disk image files or block devices of the server, the boot volume first.
    type: list
    elements: str
seealso:
  - module: vmimage.replication.snapshot
  - module: vmimage.replication.volume_attach
"""

EXAMPLES = r"""
- name: Find web01 (local provider)
  vmimage.replication.server_info:
    server: web01
    volumes: [/var/lib/libvirt/images/web01.qcow2]
    snapshot_dir: /var/lib/vmimage/snapshots
  register: found

- name: Snapshot its boot volume
  vmimage.replication.snapshot:
    volume: "{{ found.server.boot_volume.id }}"
    server: web01
    snapshot_dir: /var/lib/vmimage/snapshots
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
  sample: false
server:
  description: The server.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the server.
      type: str
      sample: web01
    id:
      description: The provider's id of the server (V(local) - its name).
      type: str
      sample: web01
    zone:
      description: Zone of the server; null where the provider has none.
      type: str
      sample: us-south-1
    profile:
      description: Profile (flavor, instance type) of the server; null where the provider has none.
      type: str
      sample: bx2-2x8
    os:
      description: Operating system of the boot volume, as the provider names it; null when unknown.
      type: str
      sample: ubuntu-22-04-amd64
    boot_volume:
      description:
        - The boot volume - C(id), C(name), C(size) (bytes), C(profile), C(zone), C(format) when known, and C(fingerprint)
          (identity of its current state, null when the provider cannot tell; then every run copies it).
      type: dict
      sample: {id: /var/lib/libvirt/images/web01.qcow2, name: web01.qcow2, size: 536870912, profile: file, zone: null,
               format: qcow2, fingerprint: "536870912:1773144000000000000:1234567"}
    volumes:
      description: Every volume of the server, the boot volume first (same keys as RV(server.boot_volume)).
      type: list
      elements: dict
      sample: []
    latest_snapshot:
      description:
        - The newest snapshot the collection took of the boot volume (keys of RV(vmimage.replication.snapshot#module:snapshot)),
          null when there is none.
      type: dict
      sample: {name: web01-20260310-120000, created: "2026-03-10T12:00:00Z"}
    image_properties:
      description:
        - V(openstack) - the C(os_*) and C(hw_*) properties of the image the server came from (Cinder's C(volume_image_metadata)
          of its boot volume, or an image-backed server's base image); the role gives them to an C(openstack) target's image.
      type: dict
      sample: {os_distro: ubuntu, hw_disk_bus: virtio}
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    adapter = _providers.source(module.params)
    server = adapter.server_info(module.params["server"])
    for volume in server["volumes"] + [server["boot_volume"]]:
        if "fingerprint" not in volume:
            volume["fingerprint"] = adapter.volume_fingerprint(volume["id"])
    return dict(changed=False, server=server)


def main():
    spec = dict(
        server=dict(type="str", required=True),
        volumes=dict(type="list", elements="str"),
    )
    ReplicationModule(spec, groups=("provider",), action="find the server").run(run)


if __name__ == "__main__":
    main()
