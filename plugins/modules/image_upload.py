#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_upload
short_description: Convert a raw volume to compressed QCOW2 and upload it in one pass, the upload overlapping the conversion
version_added: 0.1.0
description:
  - Reads a raw disk image file or block device once (files only where they hold data), compresses its
    clusters on every core, and writes a QCOW2 (version 3) front to back. Each multipart part is
    uploaded from memory as soon as its bytes are final, while later clusters are still being compressed; the
    first part, which holds the header and tables, is held in memory and sent last.
  - The same image (guest content, format, compression) that M(vmimage.replication.qemu_convert) followed by
    M(vmimage.replication.cos_upload) give, though not byte for byte, in about the time of the compression alone.
    Every part is checked by its MD5 when sent and again before the upload is completed.
  - Nothing is written to local disk, whatever the size of the disk; memory stays bounded (part 1, the part
    being filled and at most 96 MiB of parts in flight, besides the compression threads' chunks).
  - The stored object is verified before the module returns, so before anything registers it. It is read back
    once (its sha256, and each part's MD5 against the part sent) and C(qemu-img check) reads the object itself
    (O(verify)). An object that fails is deleted and the module fails naming it. A failed upload is aborted
    unless O(keep_incomplete=true).
  - Resumable. An interrupted multipart upload of the same key is continued. The conversion is
    deterministic, so the parts already stored whose MD5 matches are kept, not sent again. When a stored
    part differs, that upload is aborted and the source is converted again into a new one.
  - Idempotent. When the object at O(key) was made from the same state of O(src) (its size,
    modification time and inode, recorded as C(src-fingerprint)) with the same conversion, nothing
    is read or sent. Block devices have no such fingerprint and are always converted.
  - The object carries C(created-by), C(sha256), C(format), C(virtual-size), C(conversion) and
    C(src-fingerprint) and C(guest-sha256) besides O(metadata). The sha256 and the guest digest are known only
    at the end, so a multipart object is given them by a server-side copy onto itself.
author:
  - vmimage.replication contributors (@vmimage)
requirements:
  - ibm-cos-sdk
  - qemu-img with qemu's curl block driver (Debian package qemu-block-extra), for O(verify)
  - zlib-ng (optional, Python library; zlib output with about 2.5 times less CPU)
  - zstandard (Python library, only for O(compression_type=zstd))
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.progress
  - vmimage.replication.watchdog
attributes:
  check_mode:
    support: full
    description: Inspects the source and the object; reports whether it would convert and upload.
  diff_mode:
    support: none
    description: Returns no diff; RV(changed) and the result say what changed.
  idempotent:
    support: full
    description: A second run with the same source state and options converts and uploads nothing.
options:
  src:
    description:
      - The raw volume to read, a disk image file or a block device (for example an attached snapshot volume).
      - Images in other formats (qcow2, vmdk...) are refused; convert them with M(vmimage.replication.qemu_convert)
        and upload with M(vmimage.replication.cos_upload).
    type: path
    required: true
  bucket:
    description: Name of the bucket.
    type: str
    required: true
  key:
    description: Object key to upload to, for example C(images/web01/web01-20250101-120000.qcow2).
    type: str
    required: true
  work_dir:
    description:
      - Accepted so that playbooks written for earlier versions keep working; nothing is written there.
        When given it must be a directory.
    type: path
  metadata:
    description:
      - Extra user metadata for the object. Keys are lower-case letters, digits and hyphens,
        for example C(source-server), C(snapshot-time).
    type: dict
    default: {}
  compression_type:
    description:
      - V(zlib) is read by every qemu and every importer. V(zstd) needs qemu 5.1 or later on the reading
        side and the Python library C(zstandard) here.
    type: str
    choices: [zlib, zstd]
    default: zlib
  deflate_library:
    description:
      - Which deflate implementation compresses V(zlib) output. Both write the same format.
      - V(auto) uses C(zlib-ng) when it is installed and Python's zlib otherwise.
    type: str
    choices: [auto, zlib, zlib-ng]
    default: auto
  cluster_size:
    description: QCOW2 cluster size in bytes, a power of two from 4096 to 2097152. 65536 is what every importer expects.
    type: int
    default: 65536
  threads:
    description: Compression threads; V(0) means one per CPU core.
    type: int
    default: 0
  part_size_mb:
    description:
      - Size of each part, in MiB (at least 5). Raised when the image could need more than 10,000 parts.
    type: int
    default: 16
  concurrency:
    description: Parts sent at the same time.
    type: int
    default: 4
  verify:
    description:
      - V(check) runs C(qemu-img check) on the stored object, read by qemu-img over a loopback relay of ranged
        GETs (only its metadata is read); no URL or credential is put on its command line.
      - V(compare) also compares the stored object with O(src) cluster by cluster (reads both again).
      - Whatever this says, the object is read back once for its sha256 and its parts' MD5s.
    type: str
    choices: [none, check, compare]
    default: check
  keep_incomplete:
    description:
      - Keep the multipart upload when the run fails, so that the next run resumes it.
      - An upload whose process is killed is always left; the next run resumes or aborts it.
    type: bool
    default: false
  force:
    description: Convert and upload even when the object was made from the same source state.
    type: bool
    default: false
notes:
  - Memory holds a few compressed chunks per thread, part 1, the part being filled, at most 96 MiB of parts in
    flight, and two bytes per stored cluster for the refcounts (32 MiB per TiB of output at 64 KiB clusters).
    Above about 150 GiB of stored data the parts grow past O(part_size_mb) (10,000 parts at most), and with them
    the memory.
  - The object is completed under O(key) and then verified; an object that fails verification is deleted, so an
    earlier object under the same key is not kept. Use a new key per snapshot (the role does).
seealso:
  - module: vmimage.replication.qemu_convert
  - module: vmimage.replication.cos_upload
"""

EXAMPLES = r"""
- name: Stream the snapshot of web01 into the bucket as compressed QCOW2
  vmimage.replication.image_upload:
    cos:
      endpoint: https://s3.us-south.cloud-object-storage.appdomain.cloud
      region: us-south
      access_key_id: "{{ cos_hmac_access_key_id }}"
      secret_access_key: "{{ cos_hmac_secret_access_key }}"
    src: /var/lib/vmimage/snapshots/web01-20250101-120000.img
    bucket: dr-images
    key: images/web01/web01-20250101-120000.qcow2
    metadata:
      source-server: web01
      snapshot-time: "2025-01-01T12:00:00Z"
    progress_file: /var/tmp/work/web01/stream.progress
  async: 7200
  poll: 0
  register: stream_job
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: dr-images
key:
  description: The object key.
  returned: always
  type: str
  sample: images/web01/web01-20250101-120000.qcow2
endpoint:
  description: The endpoint the object is at.
  returned: always
  type: str
  sample: https://s3.us-south.cloud-object-storage.appdomain.cloud
format:
  description: Format of the object.
  returned: always
  type: str
  sample: qcow2
virtual_size:
  description: Size of the volume, in bytes.
  returned: always
  type: int
  sample: 2147483648
size:
  description: Size of the object, in bytes (none in check mode when it would be made).
  returned: always
  type: int
  sample: 342818816
compression_ratio:
  description: RV(virtual_size) divided by RV(size).
  returned: always
  type: float
  sample: 6.26
sha256:
  description: Hex sha256 of the object.
  returned: always
  type: str
  sample: 3846fe94a2fad463ad0c961e055ad0a2252442fe9ef577f54890fc068f02adcd
guest_sha256:
  description:
    - The guest digest C(vmimage-guest-v1) of the disk (defined in C(docs/data-path.md)), also stored on the object as
      C(guest-sha256) metadata; M(vmimage.replication.image_verify) and M(vmimage.replication.image_import) recompute it
      from the stored object. None in check mode, and for an up-to-date object that records none.
  returned: always
  type: str
  sample: 9b2c6f0d2f4a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e
etag:
  description: ETag of the object.
  returned: always
  type: str
  sample: 0b65d47a68ec95519112c3b38b6dbe45
metadata:
  description: User metadata of the object (lower-case keys); in check mode, what it would get.
  returned: always
  type: dict
  sample: {"created-by": "vmimage.replication", "format": "qcow2", "source-server": "web01"}
parts:
  description: Number of parts of the object (0 when nothing was uploaded).
  returned: always
  type: int
  sample: 21
resumed_parts:
  description: Parts of an interrupted upload that were kept instead of sent.
  returned: always
  type: int
  sample: 0
uploaded_bytes:
  description: Bytes sent in this run.
  returned: always
  type: int
  sample: 342818816
read_bytes:
  description: Bytes of O(src) read (only where it holds data).
  returned: always
  type: int
  sample: 934215680
seconds:
  description: Wall time of the conversion and upload, in seconds.
  returned: always
  type: float
  sample: 13.4
bytes_per_second:
  description: RV(read_bytes) per second.
  returned: always
  type: int
  sample: 69715945
verified:
  description: What qemu-img did with the stored object before the module returned, V(none), V(check) or V(compare).
  returned: always
  type: str
  sample: check
compressor:
  description: The library that compressed the clusters, V(zlib), V(zlib-ng) or V(zstandard).
  returned: always
  type: str
  sample: zlib-ng
clusters:
  description: Guest clusters stored compressed, and stored whole because they did not compress.
  returned: when changed and not in check mode
  type: dict
  sample: {"compressed": 12602, "uncompressed": 629}
changed:
  description: Whether an object was made (would be, in check mode).
  returned: always
  type: bool
  sample: true
verify_seconds:
  description: Wall time of the verification of the stored object (read back, qemu-img), in seconds.
  returned: when changed and not in check mode
  type: float
  sample: 1.2
part_size:
  description: Part size used, in bytes.
  returned: when changed and not in check mode
  type: int
  sample: 16777216
"""

import os

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _image_upload, _qemu
from ansible_collections.vmimage.replication.plugins.module_utils import _watchdog
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule
from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile

OPTIONS = dict(
    src=dict(type="path", required=True),
    bucket=dict(type="str", required=True),
    key=dict(type="str", required=True, no_log=False),
    work_dir=dict(type="path"),
    metadata=dict(type="dict", default={}),
    compression_type=dict(type="str", choices=["zlib", "zstd"], default="zlib"),
    deflate_library=dict(type="str", choices=["auto", "zlib", "zlib-ng"], default="auto"),
    cluster_size=dict(type="int", default=65536),
    threads=dict(type="int", default=0),
    part_size_mb=dict(type="int", default=16),
    concurrency=dict(type="int", default=4),
    verify=dict(type="str", choices=["none", "check", "compare"], default="check"),
    keep_incomplete=dict(type="bool", default=False),
    force=dict(type="bool", default=False),
)
OPTIONS.update(_watchdog.SPEC)  # stops itself when nobody follows it (heartbeat_file, abandon_after)


def _check_params(params):
    src = params["src"]
    if params["part_size_mb"] < 5 or params["concurrency"] < 1 or params["threads"] < 0:
        raise ReplicationError("Failed to stream source disk %s: part_size_mb must be at least 5, concurrency at least 1 "
                               "and threads 0 or more" % src)
    if params["work_dir"] is not None and not os.path.isdir(params["work_dir"]):
        raise ReplicationError("Failed to stream source disk %s: work_dir %s is not a directory; create it first" % (src, params["work_dir"]))
    try:
        _image_upload.check_cluster_size(params["cluster_size"])
    except ValueError as exc:
        raise ReplicationError("Failed to stream source disk %s: %s; check cluster_size" % (src, exc)) from None
    _cos.object_metadata(params["metadata"], "")  # bad metadata keys fail before anything is read
    _qemu.check_source(src)  # local mistakes first, before the endpoint is asked anything


def run(module):
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    params = dict(module.params)
    cos, bucket, key = params["cos"], params["bucket"], params["key"]
    params["threads"] = params["threads"] or os.cpu_count() or 1

    def local_error(exc):
        return "Failed to stream source disk %s to s3://%s/%s at %s: %s" % (params["src"], bucket, key, cos["endpoint"], exc)
    with _cos.naming_errors("upload", cos, bucket, key, local_error):
        _check_params(params)
        client = _cos.connect(cos, max_pool_connections=params["concurrency"] + 2)
        _cos.check_bucket(client, cos, bucket)
        progress = None if module.check_mode else ProgressFile(params["progress_file"], "stream")
        result = _image_upload.ensure_present(client, params, check_mode=module.check_mode, progress=progress)
    result.update(bucket=bucket, endpoint=cos["endpoint"])
    return result


def main():
    ReplicationModule(OPTIONS, groups=("cos", "progress")).run(_watchdog.guarded(run, "stream the image to", undo=_watchdog.undo_object))


if __name__ == "__main__":
    main()
