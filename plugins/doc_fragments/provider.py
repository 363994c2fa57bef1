# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # The source cloud of the modules of the pipeline's first stages (server_info, snapshot, snapshot_info, volume_attach):
    # O(provider) and the options of every provider adapter (plugins/module_utils/_<provider>.py, OPTIONS), one section each.
    DOCUMENTATION = r"""
options:
  provider:
    description:
      - The cloud the server lives in; its adapter answers every stage the same way.
      - V(local) - the server is disk image files or block devices of the managed host, snapshots are files in O(snapshot_dir).
      - V(ibm_vpc) - IBM Cloud VPC instances and their block storage volumes.
      - V(openstack) - volume-backed Nova servers and their Cinder volumes and snapshots (options in O(openstack)).
    type: str
    choices: [ibm_vpc, local, openstack]
    default: local
  snapshot_dir:
    description:
      - Provider V(local) only, and required there - directory that holds the snapshots
        (created with mode 0700 when a snapshot is taken).
    type: path
  loop:
    description:
      - Provider V(local) only - M(vmimage.replication.volume_attach) exposes the snapshot as a read-only loop device
        (needs root) instead of its data file.
    type: bool
    default: false
"""
