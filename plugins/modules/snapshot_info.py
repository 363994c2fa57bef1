#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_info
short_description: List the snapshots taken by M(vmimage.replication.snapshot)
version_added: 0.1.0
description:
  - Lists the snapshots the collection took (with O(provider=local), those in O(snapshot_dir)), oldest first,
    optionally only those of one server, volume or name.
  - Gives the current fingerprint of O(volume), so a play can tell whether the volume changed since a snapshot.
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
      - Only snapshots of this server.
    type: str
  volume:
    description:
      - Only snapshots of this volume (V(local) - its path; elsewhere the provider's id); also returns its current
        fingerprint in RV(volume_fingerprint).
    type: str
  name:
    description:
      - Only the snapshot of this name.
    type: str
seealso:
  - module: vmimage.replication.snapshot
"""

EXAMPLES = r"""
- name: Snapshots of web01
  vmimage.replication.snapshot_info:
    snapshot_dir: /var/lib/vmimage/snapshots
    volume: /var/lib/libvirt/images/web01.qcow2
  register: snaps

- name: Say whether the disk changed since its newest snapshot
  ansible.builtin.debug:
    msg: "{{ snaps.snapshots | length == 0 or snaps.snapshots[-1].fingerprint != snaps.volume_fingerprint }}"
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
  sample: false
snapshots:
  description: The snapshots found, oldest first, with the same keys as RV(vmimage.replication.snapshot#module:snapshot).
  returned: always
  type: list
  elements: dict
  sample:
    - name: web01-20260310-120000
      path: /var/lib/vmimage/snapshots/web01-20260310-120000.qcow2
      volume: /var/lib/libvirt/images/web01.qcow2
      server: web01
      created: "2026-03-10T12:00:00Z"
      size: 536870912
      format: qcow2
      fingerprint: "536870912:1773144000000000000:1234567"
      method: sparse-copy
volume_fingerprint:
  description:
    - Current fingerprint of O(volume); null when no volume was given, it does not exist, it is a block device,
      or the provider cannot tell.
  returned: always
  type: str
  sample: "536870912:1773144000000000000:1234567"
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    adapter = _providers.source(p)
    snapshots = adapter.snapshot_list(server=p["server"], volume=p["volume"], name=p["name"])
    return dict(changed=False, snapshots=snapshots, volume_fingerprint=adapter.volume_fingerprint(p["volume"]) if p["volume"] else None)


def main():
    spec = dict(
        server=dict(type="str"),
        volume=dict(type="str"),
        name=dict(type="str"),
    )
    ReplicationModule(spec, groups=("provider",), action="list snapshots").run(run)


if __name__ == "__main__":
    main()
