# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filter unseal: open credentials sealed by the management application (documented in unseal.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def unseal(blob, key):
    """The credentials sealed in ``blob`` with ``key`` (AES-256-GCM); a changed, cut or foreign blob fails."""
    # Imported when called, not by every task that resolves some filter of the collection (see retention.py).
    from ansible_collections.vmimage.replication.plugins.module_utils import _sealed  # pylint: disable=import-outside-toplevel

    try:
        return _sealed.unseal(blob, key)
    except ReplicationError as exc:
        raise AnsibleFilterError("unseal: %s" % exc.msg) from None


class FilterModule:
    def filters(self):
        return {"unseal": unseal}
