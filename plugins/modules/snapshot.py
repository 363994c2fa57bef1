#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Take, remove or restore a point-in-time copy of a server's disk
version_added: 0.1.0
description:
  - Takes a consistent point-in-time copy of a volume, the first stage of a replication.
  - The provider's adapter takes the snapshot and marks it as the collection's; a snapshot the collection did not make
    is never removed.
  - With O(provider=local), the volume is a disk image file (raw or qcow2) or a block device on the managed host,
    and the snapshot is a file in O(snapshot_dir) with a metadata file C(<name>.snapshot.json) beside it
    (server, volume, created, size, format, fingerprint, created-by).
  - The copy is a reflink where the file system supports it (btrfs, XFS), else a sparse copy that skips holes and
    zero blocks. Data is written under a temporary name and renamed when complete, so a snapshot is never partial.
  - The volume must not change while it is copied. Its fingerprint is taken before and after the copy; when it changed,
    the copy is made once more, and if it changed again the module fails. Freeze the guest file systems (O(consistency)) or stop
    the server before the snapshot.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - libvirt-python on the host that runs the task, for O(consistency=crash) and O(consistency=required)
extends_documentation_fragment:
  - vmimage.replication.provider
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
options:
  volume:
    description:
      - The volume to snapshot - with O(provider=local) the path of the disk image file or block device, elsewhere the
        provider's id or name of the volume (M(vmimage.replication.server_info) gives the boot volume's).
      - Required with O(state=present). With O(state=restored), defaults to the volume the snapshot was taken of.
    type: str
  server:
    description:
      - Name of the server the volume belongs to, recorded with the snapshot and used in the default O(name).
      - With O(provider=local), defaults to the file name of O(volume) up to its first dot.
    type: str
  name:
    description:
      - Name of the snapshot.
      - Defaults to C(<server>-<YYYYMMDD-HHMMSS>) from the snapshot's UTC time. Without a name, a volume that has not
        changed since its newest snapshot (same fingerprint) is not copied again.
      - Required with O(state=absent) and O(state=restored).
    type: str
  state:
    description:
      - V(present) takes the snapshot; with a O(name) that exists already, nothing is done.
      - V(absent) removes snapshot O(name) and its metadata; a snapshot the collection did not make is refused.
      - V(restored) rolls the volume back to snapshot O(name). A file is replaced atomically; a block device is
        written in place. Nothing is written when the volume already holds the snapshot's content.
        Stop the server first.
    type: str
    choices: [present, absent, restored]
    default: present
  consistency:
    description:
      - How the guest's file systems are quiesced around the snapshot (O(state=present)); works with every provider,
        for a guest that libvirt runs on a host the task can reach through O(libvirt_uri).
      - V(none) takes the snapshot as it is.
      - V(crash) freezes the guest's file systems through libvirt (C(virsh domfsfreeze), which needs qemu-guest-agent
        in the guest), takes the snapshot and thaws; a guest that cannot be frozen gives a warning and a crash-consistent
        snapshot.
      - V(required) is the same, but fails when the guest cannot be frozen (no guest agent, freeze not supported).
      - The thaw runs on every path (the snapshot failing, a timeout, the task being cancelled), and a guest that is not
        running needs no freeze.
    type: str
    choices: [none, crash, required]
    default: none
  libvirt_uri:
    description: The libvirt connection URI of the host that runs the guest, for O(consistency).
    type: str
    default: qemu:///system
  domain:
    description: The libvirt domain name of the guest, for O(consistency). Defaults to O(server).
    type: str
  freeze_mountpoints:
    description: The guest mount points to freeze (C(domfsfreeze --mountpoint)); all of the guest's file systems when unset.
    type: list
    elements: str
  freeze_timeout:
    description: Seconds to wait for the freeze to return; after that the guest is thawed and the task fails.
    type: float
    default: 30
  max_frozen:
    description:
      - Seconds the guest may stay frozen while the snapshot is taken (a frozen guest is an outage). After that the
        guest is thawed, the snapshot interrupted and the task fails.
    type: float
    default: 60
  pre_hook:
    description:
      - A command run before the freeze on the host that runs the task (flush a database, for example), as a list,
        program first; no shell. The snapshot is not taken when it fails.
    type: list
    elements: str
  post_hook:
    description: A command run after the thaw, as a list, program first; it runs on every path once O(pre_hook) succeeded.
    type: list
    elements: str
  hook_timeout:
    description: Seconds each of O(pre_hook) and O(post_hook) may run before it is stopped and the task fails.
    type: float
    default: 300
  keep_last:
    description:
      - Retention with O(state=present) - after the snapshot, keep this many of the collection's newest snapshots of O(volume)
        (of O(server) when set) and delete the older ones. A snapshot the collection did not make is never deleted nor counted.
      - Unset with O(keep_days) unset, nothing is deleted. With O(keep_days) alone, the newest snapshot is kept.
    type: int
  keep_days:
    description:
      - Retention with O(state=present) - of the snapshots past O(keep_last), delete only those taken more than this many
        days ago.
    type: float
attributes:
  check_mode:
    support: full
    description: Reports the same C(changed) as a real run and writes nothing.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: With O(name), or for a volume whose fingerprint did not change, a second run changes nothing.
notes:
  - The fingerprint of a file is its size, modification time and inode; a block device has none, so each run
    without O(name) takes a new snapshot of it.
seealso:
  - module: vmimage.replication.snapshot_info
  - module: vmimage.replication.qemu_convert
"""

EXAMPLES = r"""
- name: Snapshot the disk of web01
  vmimage.replication.snapshot:
    volume: /var/lib/libvirt/images/web01.qcow2
    snapshot_dir: /var/lib/vmimage/snapshots
  register: snap

- name: Convert the snapshot
  vmimage.replication.qemu_convert:
    src: "{{ snap.snapshot.path }}"
    dest: /var/tmp/{{ snap.snapshot.name }}.qcow2

- name: Snapshot web01 with its file systems frozen, after flushing its database
  vmimage.replication.snapshot:
    volume: /var/lib/libvirt/images/web01.qcow2
    snapshot_dir: /var/lib/vmimage/snapshots
    consistency: required
    domain: web01
    freeze_mountpoints: [/var/lib/postgresql]
    max_frozen: 30
    pre_hook: [ssh, web01, sudo, -u, postgres, psql, -c, CHECKPOINT]

- name: Remove the snapshot
  vmimage.replication.snapshot:
    snapshot_dir: /var/lib/vmimage/snapshots
    name: "{{ snap.snapshot.name }}"
    state: absent

- name: Roll web01 back to a snapshot (server stopped)
  vmimage.replication.snapshot:
    snapshot_dir: /var/lib/vmimage/snapshots
    name: web01-20260310-120000
    state: restored

- name: Snapshot the boot volume of a VPC server, keeping its 7 newest snapshots of the collection
  vmimage.replication.snapshot:
    provider: ibm_vpc
    ibm_vpc:
      region: us-south
    volume: "{{ info.server.boot_volume.id }}"
    server: web01
    keep_last: 7
"""

RETURN = r"""
changed:
  description: Whether a snapshot was (or in check mode would be) taken, removed or restored.
  returned: always
  type: bool
  sample: true
snapshot:
  description: The snapshot taken, removed or restored. Empty when O(state=absent) found nothing to remove.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the snapshot.
      type: str
      sample: web01-20260310-120000
    id:
      description: The provider's id of the snapshot (V(local) - its name).
      type: str
      sample: web01-20260310-120000
    path:
      description: Path of the snapshot's data file (V(local) only; null elsewhere).
      type: str
      sample: /var/lib/vmimage/snapshots/web01-20260310-120000.qcow2
    volume:
      description: The volume the snapshot is of (V(local) - its absolute path).
      type: str
      sample: /var/lib/libvirt/images/web01.qcow2
    server:
      description: Server name recorded in the metadata.
      type: str
      sample: web01
    created:
      description: UTC time the snapshot was taken.
      type: str
      sample: "2026-03-10T12:00:00Z"
    size:
      description: Size in bytes of the volume (of the image file, not its virtual size).
      type: int
      sample: 536870912
    format:
      description: Format of the volume, V(raw) for block devices.
      type: str
      sample: qcow2
    fingerprint:
      description: Identity of the volume's state when copied (C(size:mtime_ns:inode)), null for block devices.
      type: str
      sample: "536870912:1773144000000000000:1234567"
    method:
      description: How the data was copied, V(reflink) or V(sparse-copy); null in check mode.
      type: str
      sample: sparse-copy
    direct:
      description: V(openstack) - V(rbd) for a direct snapshot (a Glance image whose data Ceph cloned), else null.
      type: str
      sample: rbd
    direct_fallback:
      description:
        - V(openstack) with C(openstack.direct_snapshot) - why the direct path was not taken and a Cinder snapshot was
          (the volume is not in Ceph, the Ceph user may not write the images pool, Glance refused the location).
      type: str
      sample: "Ceph refused it (rbd clone: rbd: clone error: (1) Operation not permitted)"
consistency:
  description: How the guest was quiesced for the snapshot (O(consistency)).
  returned: when state=present
  type: dict
  contains:
    mode:
      description: The O(consistency) asked for.
      type: str
      sample: required
    domain:
      description: The libvirt domain frozen; null with O(consistency=none).
      type: str
      sample: web01
    state:
      description:
        - V(frozen) - the file systems were frozen for the snapshot; V(unfrozen) - they could not be (O(consistency=crash));
          V(shutoff) - the guest was not running; V(none) - no freeze was asked for, check mode, or the snapshot O(name) exists already.
      type: str
      sample: frozen
    frozen_filesystems:
      description: The mount points frozen (the guest's file systems as libvirt lists them, or O(freeze_mountpoints)).
      type: list
      elements: str
      sample: [/, /boot]
    frozen_count:
      description: How many file systems libvirt froze.
      type: int
      sample: 2
    frozen_seconds:
      description: How long the guest was frozen, from the freeze request to the thaw.
      type: float
      sample: 1.204
pruned:
  description: The collection's snapshots deleted (in check mode, that would be deleted) by O(keep_last) / O(keep_days), oldest first.
  returned: when state=present
  type: list
  elements: dict
  sample: [{"name": "web01-20260310-120000", "id": "r006-0f3c", "snapshot_time": "2026-03-10T12:00:00Z"}]
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _consistency, _providers, _snapshot_prune
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    p = module.params
    adapter = _providers.source(p)
    if p["state"] == "present":
        (snapshot, changed), consistency = _consistency.from_params(
            p, lambda: adapter.snapshot_create(p["volume"], server=p["server"], name=p["name"], check_mode=module.check_mode),
            check_mode=module.check_mode, warn=module.ansible.warn, exists=lambda: bool(p["name"] and adapter.snapshot_list(name=p["name"])))
        pruned = _snapshot_prune.prune(adapter, p["server"], p["volume"], snapshot, p["keep_last"], p["keep_days"], check_mode=module.check_mode)
        return dict(changed=changed or bool(pruned), snapshot=snapshot or {}, consistency=consistency, pruned=pruned)
    elif p["state"] == "absent":
        snapshot, changed = adapter.snapshot_delete(p["name"], check_mode=module.check_mode)
    else:
        snapshot, changed = adapter.snapshot_restore(p["name"], volume=p["volume"], check_mode=module.check_mode)
    return dict(changed=changed, snapshot=snapshot or {})


def main():
    spec = dict(
        volume=dict(type="str"),
        server=dict(type="str"),
        name=dict(type="str"),
        state=dict(type="str", choices=["present", "absent", "restored"], default="present"),
        consistency=dict(type="str", choices=["none", "crash", "required"], default="none"),
        libvirt_uri=dict(type="str", default="qemu:///system"),
        domain=dict(type="str"),
        freeze_mountpoints=dict(type="list", elements="str"),
        freeze_timeout=dict(type="float", default=30),
        max_frozen=dict(type="float", default=60),
        pre_hook=dict(type="list", elements="str"),
        post_hook=dict(type="list", elements="str"),
        hook_timeout=dict(type="float", default=300),
        keep_last=dict(type="int"),
        keep_days=dict(type="float"),
    )
    module = ReplicationModule(spec, groups=("provider",), action="manage the snapshot",
                               required_if=[("state", "present", ["volume"]), ("state", "absent", ["name"]), ("state", "restored", ["name"])])
    module.run(run)


if __name__ == "__main__":
    main()
