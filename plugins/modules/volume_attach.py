#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: volume_attach
short_description: Attach a volume made from a snapshot to the conversion host, and find its device
version_added: 0.1.0
description:
  - The stage between the snapshot and the data path - makes a volume from O(snapshot), attaches it to the conversion
    host O(host) and waits until its block device exists; RV(attachment.device) is what the data path reads.
    The device is found from what the provider says about the attachment, never guessed.
  - With O(state=absent), detaches and deletes what O(state=present) made for O(snapshot) on O(host); nothing left
    to remove is not an error. The snapshot itself is left to M(vmimage.replication.snapshot).
  - With O(provider=local), the conversion host is the managed host and no volume is made - the device is the
    snapshot's data file, or with O(loop=true) a read-only loop device over it.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.provider
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
options:
  snapshot:
    description:
      - Name or id of the snapshot the volume is made from (RV(vmimage.replication.snapshot#module:snapshot.name)).
    type: str
    required: true
  host:
    description:
      - The provider's id of the conversion host the volume is attached to (for example the instance id of the
        conversion server). With O(provider=local), the managed host; defaults to V(localhost).
    type: str
  state:
    description:
      - V(present) attaches the volume; attaching what is attached already changes nothing.
      - V(absent) detaches and deletes it.
    type: str
    choices: [present, absent]
    default: present
  attachment:
    description:
      - With O(state=absent), the RV(attachment) that O(state=present) returned. Without it the adapter finds what
        it made from O(snapshot) for O(host) by its marks.
    type: dict
attributes:
  check_mode:
    support: full
    description: Reports the same C(changed) as a real run and attaches or detaches nothing (RV(attachment.device) is then null when nothing is attached yet).
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: A second run with the same options changes nothing.
seealso:
  - module: vmimage.replication.snapshot
  - module: vmimage.replication.image_upload
"""

EXAMPLES = r"""
- name: Attach the snapshot as a read-only loop device
  vmimage.replication.volume_attach:
    snapshot: "{{ snap.snapshot.name }}"
    snapshot_dir: /var/lib/vmimage/snapshots
    loop: true
  register: attached

- name: Read it into the bucket
  vmimage.replication.image_upload:
    src: "{{ attached.attachment.device }}"
    cos: "{{ cos }}"
    bucket: dr-images
    key: images/web01/{{ snap.snapshot.name }}.qcow2

- name: Detach it
  vmimage.replication.volume_attach:
    snapshot: "{{ snap.snapshot.name }}"
    snapshot_dir: /var/lib/vmimage/snapshots
    attachment: "{{ attached.attachment }}"
    state: absent
"""

RETURN = r"""
changed:
  description: Whether something was (or in check mode would be) attached or detached.
  returned: always
  type: bool
  sample: true
attachment:
  description: The attachment; after O(state=absent), the same with RV(attachment.device) and RV(attachment.attachment_id) null.
  returned: always
  type: dict
  contains:
    volume_id:
      description: The provider's id of the volume made from the snapshot (V(local) - the snapshot's data file).
      type: str
      sample: /var/lib/vmimage/snapshots/web01-20260310-120000.raw
    attachment_id:
      description: The provider's id of the attachment (V(local) - the loop device), null when there is none.
      type: str
      sample: /dev/loop3
    device:
      description: The block device (or file) on the conversion host that holds the snapshot's bytes.
      type: str
      sample: /dev/loop3
    host:
      description: The conversion host.
      type: str
      sample: localhost
    snapshot:
      description: Name of the snapshot the volume was made from.
      type: str
      sample: web01-20260310-120000
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    if p["loop"] and p["provider"] != "local":
        raise ReplicationError("Failed to attach a volume from snapshot %s: loop applies to provider local only; remove it" % p["snapshot"])
    adapter = _providers.source(p)
    if p["state"] == "present":
        attachment, changed = adapter.volume_attach(p["snapshot"], p["host"], check_mode=module.check_mode)
    else:
        given = dict(p["attachment"] or {})
        given.setdefault("snapshot", p["snapshot"])
        given.setdefault("host", p["host"])
        attachment, changed = adapter.volume_detach(given, check_mode=module.check_mode)
    return dict(changed=changed, attachment=attachment)


def main():
    spec = dict(
        snapshot=dict(type="str", required=True),
        host=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        attachment=dict(type="dict"),
    )
    ReplicationModule(spec, groups=("provider",), action="attach the volume").run(run)


if __name__ == "__main__":
    main()
