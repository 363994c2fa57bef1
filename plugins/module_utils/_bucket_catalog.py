# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Target ``bucket_catalog``: the bucket that holds the images is the image library (see ``_catalog``)."""

from __future__ import annotations

import copy

from ansible_collections.vmimage.replication.plugins.module_utils import _catalog, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._module import COS_SPEC

# The options of this target (doc fragments vmimage.replication.cos and vmimage.replication.catalog).
OPTIONS = dict(
    cos=copy.deepcopy(COS_SPEC["cos"]),
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", default="images/"),
)


class Target(_providers.Target):
    name = "bucket_catalog"
    object_is_image = True

    def _open(self, action):
        p = self.params
        return _catalog.open_catalog(p["cos"], p["bucket"], p["prefix"], p["server"], action)

    def info(self):
        return _catalog.info(self._open("list images"))

    def import_image(self, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None,
                     check_mode=False, **extra):
        return _catalog.import_image(self._open("import image"), key, sha256=sha256, snapshot_time=snapshot_time,
                                     source_fingerprint=source_fingerprint, keep_last=keep_last, keep_days=keep_days,
                                     check_mode=check_mode, **extra)

    def remove_image(self, name, force=False, check_mode=False):
        return _catalog.remove_image(self._open("import image"), name, force=force, check_mode=check_mode)
