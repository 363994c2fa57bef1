# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters that give playbooks the collection's names: image_name, object_key, latest_name (documented in <name>.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.vmimage.replication.plugins.module_utils import _naming


def image_name(server, snapshot_time):
    """``<server>-YYYYMMDD-HHMMSS`` of the snapshot's UTC time."""
    try:
        return _naming.image_name(server, snapshot_time)
    except ValueError as exc:
        raise AnsibleFilterError("image_name: %s" % exc) from None


def object_key(server, snapshot_time, format="qcow2", prefix="images/"):  # pylint: disable=redefined-builtin
    """``<prefix><server>/<server>-YYYYMMDD-HHMMSS.<format>``."""
    try:
        return _naming.object_key(prefix, server, snapshot_time, format)
    except ValueError as exc:
        raise AnsibleFilterError("object_key: %s" % exc) from None


def latest_name(server):
    """``<server>-latest``."""
    try:
        return _naming.latest_name(server)
    except ValueError as exc:
        raise AnsibleFilterError("latest_name: %s" % exc) from None


class FilterModule:
    def filters(self):
        return {"image_name": image_name, "object_key": object_key, "latest_name": latest_name}
