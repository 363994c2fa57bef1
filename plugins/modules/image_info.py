#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: image_info
short_description: List a server's images in the target image library
version_added: 0.1.0
description:
  - Lists the images of a server registered by M(vmimage.replication.image_import), oldest first, and the one
    C(<server>-latest) resolves to.
  - With O(target=bucket_catalog), reads the catalog C(<prefix><server>/catalog.json), and reports as RV(orphans) the objects
    under C(<prefix><server>/) that vmimage.replication made (metadata C(created-by)) but the catalog does not list,
    for example the upload of a run that failed before its import.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.cos
  - vmimage.replication.catalog
  - vmimage.replication.catalog.info_module
  - vmimage.replication.ibm_vpc
  - vmimage.replication.openstack
seealso:
  - module: vmimage.replication.image_import
"""

EXAMPLES = r"""
- name: Images of web01
  vmimage.replication.image_info:
    cos: "{{ cos }}"
    bucket: dr-images
    server: web01
  register: lib

- name: Show the key of web01-latest
  ansible.builtin.debug:
    msg: "{{ lib.latest.key if lib.latest else 'no image yet' }}"
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
  sample: false
images:
  description: The images in the catalog, oldest first, with the keys of RV(vmimage.replication.image_import#module:image).
  returned: always
  type: list
  elements: dict
  sample: [{name: web01-20260310-120000, key: images/web01/web01-20260310-120000.qcow2, sha256: 9f86d0, snapshot_time: "2026-03-10T12:00:00Z",
            size: 231735296, format: qcow2, source_fingerprint: null, guest_sha256: null}]
latest:
  description: The image C(<server>-latest) resolves to, null when the server has no image.
  returned: always
  type: dict
  sample: {name: web01-20260310-120000, key: images/web01/web01-20260310-120000.qcow2, format: qcow2}
orphans:
  description: Objects made by vmimage.replication under the server's folder that the catalog does not list.
  returned: always
  type: list
  elements: dict
  sample: [{key: images/web01/web01-20260311-120000.qcow2, size: 231735296, sha256: 9f86d0, snapshot_time: "2026-03-11T12:00:00Z",
            last_modified: "2026-03-11T12:20:00Z"}]
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    return _providers.target(module.params).info()


def main():
    module = ReplicationModule({}, groups=("cos", "catalog"))
    module.require_library("ibm-cos-sdk", _cos.IMPORT_ERROR)
    module.run(run)


if __name__ == "__main__":
    main()
