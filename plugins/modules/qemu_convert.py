#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_convert
short_description: Convert a disk image or block device to QCOW2 (or raw, VHD) with qemu-img
version_added: 0.1.0
description:
  - Converts a disk image file or a block device (for example a volume made from a snapshot and attached to
    the conversion host) into a QCOW2, raw or VHD (vpc) image with C(qemu-img convert).
  - Uses every core for QCOW2 compression (O(coroutines) parallel requests, out-of-order writes), skips zero and
    unallocated areas, and flushes the output to disk (O_DIRECT or fsync) before the task returns.
  - Checks free space before it starts (C(qemu-img measure); the need is returned as RV(required_bytes)), writes C(<dest>.partial) and renames it into place
    only once it is complete, verified and checksummed; a failed or killed conversion leaves no partial file behind.
  - Idempotent through a sidecar file C(<dest>.vmimage.json) that records the source state and the options the
    output was made from; a block device has no cheap state identity, so it is converted on every run.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - qemu-img on the host that runs the task (package C(qemu-utils) on Debian/Ubuntu, C(qemu-img) on RHEL)
extends_documentation_fragment:
  - vmimage.replication.progress
  - vmimage.replication.watchdog
attributes:
  check_mode:
    support: full
    description: Answers C(changed) as a real run would, without writing anything.
  diff_mode:
    support: none
    description: Returns no diff; RV(changed), RV(sha256) and RV(stored_size) say what was written.
  idempotent:
    support: full
    description: With the same source state and options, a second run converts nothing.
options:
  src:
    description:
      - The source disk image file or block device.
      - Required when O(state=present).
    type: path
  dest:
    description: The output image file. Its directory must exist.
    type: path
    required: true
  state:
    description:
      - V(present) converts O(src) to O(dest) unless O(dest) already holds that conversion.
      - V(absent) removes O(dest), its sidecar and any partial output.
    type: str
    choices: [present, absent]
    default: present
  src_format:
    description:
      - Format of O(src) (any qemu-img format, such as V(raw), V(qcow2), V(vmdk), V(vhdx)).
      - When omitted it is detected with C(qemu-img info); block devices are always treated as V(raw), never probed.
    type: str
  format:
    description: Format of the output.
    type: str
    choices: [qcow2, raw, vpc]
    default: qcow2
  compress:
    description: Compress the QCOW2 output. Ignored for other formats.
    type: bool
    default: true
  compression_type:
    description: Compression of the QCOW2 output. V(zstd) is faster; V(zlib) is readable by older qemu (before 5.1).
    type: str
    choices: [zlib, zstd]
    default: zlib
  coroutines:
    description: Parallel conversion requests (C(qemu-img convert -m), 1 to 16); compression runs on up to this many cores.
    type: int
    default: 16
  cluster_size:
    description:
      - Cluster size of a QCOW2 output in bytes, a power of two from 512 to 2097152; qemu-img's default (65536) when unset.
      - Larger clusters mean fewer, larger compression requests, which keep every core busy (2 GiB disk, 2 cores
        measured 13.2 s at 64 KiB and 10.1 s at 256 KiB for the same output size). The default stays 64 KiB, the
        size every image importer is known to accept; raise it where your target library accepts it.
    type: int
  out_of_order:
    description: Allow out-of-order writes (C(qemu-img convert -W)), which lets compression run in parallel.
    type: bool
    default: true
  cache:
    description:
      - Cache mode of the output (C(qemu-img convert -t)), or V(auto).
      - V(none) (O_DIRECT) bypasses the page cache. Where the file system has no O_DIRECT (some tmpfs, overlay,
        9p) the module falls back to V(writeback), warns, and returns the mode it used in RV(cache).
      - V(auto) uses V(none) where writes are cluster-aligned and V(writeback) for compressed QCOW2, whose
        clusters are packed at unaligned offsets that O_DIRECT turns into read-modify-write (about 15% slower).
      - With any mode other than V(none) the output is flushed with fsync before the task returns, so the data
        is on disk when the task says it is done (a host crash cannot leave a corrupt image behind).
    type: str
    default: auto
  verify:
    description:
      - V(check) runs C(qemu-img check) on a QCOW2 output (raw and vpc outputs are opened with C(qemu-img info)).
      - V(compare) also compares the content of the output with the source (C(qemu-img compare)); this reads the
        source a second time.
    type: str
    choices: [none, check, compare]
    default: check
  checksum:
    description: Compute the sha256 of the output (one read of it), returned in RV(sha256) for the upload.
    type: bool
    default: true
  force:
    description: Convert again even when O(dest) already holds the conversion of the same source state.
    type: bool
    default: false
notes:
  - The free-space check uses the uncompressed size of the allocated data as the upper bound, so a compressed
    output may need much less than was required.
"""

EXAMPLES = r"""
- name: Convert the attached snapshot volume to a compressed QCOW2
  vmimage.replication.qemu_convert:
    src: /dev/vdb
    dest: /var/tmp/replication/web01.qcow2
    compression_type: zstd
    progress_file: /var/tmp/replication/web01.progress.json
  register: converted

- name: Convert a local disk image and compare the result with the source
  vmimage.replication.qemu_convert:
    src: /var/lib/libvirt/images/web01.img
    dest: /srv/export/web01.qcow2
    verify: compare

- name: Remove the converted image once it is uploaded
  vmimage.replication.qemu_convert:
    dest: /var/tmp/replication/web01.qcow2
    state: absent
"""

RETURN = r"""
src:
  description: The source that was converted.
  returned: always
  type: str
  sample: /dev/vdb
dest:
  description: The output image file.
  returned: always
  type: str
  sample: /var/tmp/replication/web01.qcow2
format:
  description: Format of the output.
  returned: always
  type: str
  sample: qcow2
src_format:
  description: Format the source was read as (detected or given).
  returned: always
  type: str
  sample: raw
compression_type:
  description: Compression of the QCOW2 output; null when it is not compressed.
  returned: always
  type: str
  sample: zlib
virtual_size:
  description: Virtual size of the disk in bytes; null when O(state=absent).
  returned: always
  type: int
  sample: 21474836480
stored_size:
  description: Size of the output file in bytes; null in check mode when a conversion would run.
  returned: always
  type: int
  sample: 1288490188
compression_ratio:
  description: RV(virtual_size) divided by RV(stored_size) (zeros skipped and compression together).
  returned: always
  type: float
  sample: 16.67
sha256:
  description: Hex sha256 of the output file; null when O(checksum=false) or nothing was written.
  returned: always
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
seconds:
  description: Wall time this run spent converting, verifying and checksumming; 0 when nothing was converted.
  returned: always
  type: float
  sample: 41.2
bytes_per_second:
  description: RV(virtual_size) divided by RV(seconds); 0 when nothing was converted.
  returned: always
  type: int
  sample: 521233456
verified:
  description:
    - What verified the output, V(none), V(info) (opened as its format), V(check) (C(qemu-img check)) or
      V(compare) (content equal to the source).
  returned: always
  type: str
  sample: check
cache:
  description: Cache mode the output was written with (what V(auto) chose, or V(writeback) after a fallback from V(none)).
  returned: always
  type: str
  sample: writeback
required_bytes:
  description:
    - Local disk the conversion needs at most in the directory of O(dest) (C(qemu-img measure) of the allocated data,
      compression not counted), checked against its free space before anything is written; a run fails early, naming
      the directory and both numbers, when it is not free. Null when nothing had to be converted.
  returned: always
  type: int
  sample: 934281216
changed:
  description: Whether the output was (or in check mode would be) written or removed.
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _qemu
from ansible_collections.vmimage.replication.plugins.module_utils import _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule

OPTIONS = dict(
    src=dict(type="path"),
    dest=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    src_format=dict(type="str"),
    format=dict(type="str", choices=list(_qemu.FORMATS), default="qcow2"),
    compress=dict(type="bool", default=True),
    compression_type=dict(type="str", choices=list(_qemu.COMPRESSION_TYPES), default="zlib"),
    coroutines=dict(type="int", default=16),
    cluster_size=dict(type="int"),
    out_of_order=dict(type="bool", default=True),
    cache=dict(type="str", default="auto"),
    verify=dict(type="str", choices=list(_qemu.VERIFY_MODES), default="check"),
    checksum=dict(type="bool", default=True),
    force=dict(type="bool", default=False),
)
OPTIONS.update(_watchdog.SPEC)  # stops itself when nobody follows it (heartbeat_file, abandon_after)


def convert(module):
    params = module.params
    if params["state"] == "absent":
        return _qemu.ensure_absent(params, module.check_mode)
    if not 1 <= params["coroutines"] <= 16:
        raise ReplicationError("Failed to convert disk %s: coroutines must be between 1 and 16 (qemu-img -m), got %d" % (params["src"], params["coroutines"]))
    _qemu.check_cluster_size(params["cluster_size"], params["src"])
    result, warnings = _qemu.ensure_present(params, module.check_mode)
    for warning in warnings:
        module.ansible.warn(warning)
    return result


def main():
    module = ReplicationModule(OPTIONS, groups=("progress",), action="convert the disk", required_if=[("state", "present", ["src"])])
    module.run(_watchdog.guarded(convert, "convert the disk to", target="dest", undo=_watchdog.undo_file))


if __name__ == "__main__":
    main()
