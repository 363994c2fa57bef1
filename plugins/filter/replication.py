# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The decisions of the replicate_server role, where unit tests reach them (each documented in <name>.yml):
server_unchanged, data_path, snapshot_owned, keep_for_resume, replication_result, conversion_host_for."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

DATA_PATHS = ("auto", "stream", "staged")
# Every key of a server's result record, in the order docs/ show them.
RESULT_KEYS = ("status", "image", "latest", "previous_latest", "pruned", "virtual_size", "stored_size", "compression_ratio", "seconds",
               "bytes_per_second", "uploaded_bytes", "resumed_parts", "key", "sha256", "error")
STATUSES = ("unchanged", "replicated", "would-replicate", "failed")


def _bool(value, name):
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise AnsibleFilterError("%s must be a boolean, not %r" % (name, value)) from None


def _mapping(value):
    return value if isinstance(value, dict) else {}


def _name(image):
    """An image given as a dict (image_import, image_info) or as its name."""
    return image.get("name") if isinstance(image, dict) else image


def server_unchanged(server, latest, force=False, uploaded=None):
    """True when the latest image was made from the boot volume as it is now and ``force`` is off.

    ``server`` is server_info's ``server``; ``latest`` is image_info's ``latest``. Before the copy: the volume's
    fingerprint equals the image's ``source_fingerprint``. After it (``uploaded``: the data path's result), for a
    provider that cannot fingerprint a volume (VPC: fingerprint null): the guest digest of what was read equals the
    image's ``guest_sha256``, so nothing new is imported. A volume with a fingerprint is imported when it gets there (its
    new fingerprint recorded, or every later run would read it again).
    """
    if _bool(force, "force") or not isinstance(latest, dict):
        return False
    fingerprint = _mapping(_mapping(server).get("boot_volume")).get("fingerprint")
    if uploaded is not None:
        if fingerprint is not None:
            return False
        digest = str(_mapping(uploaded).get("guest_sha256") or "").lower()
        return bool(digest) and digest == str(latest.get("guest_sha256") or "").lower()
    return fingerprint is not None and latest.get("source_fingerprint") == fingerprint


def data_path(requested, compress=True, source_format="raw"):
    """``stream`` or ``staged``: ``auto`` streams raw sources made into compressed QCOW2, and stages the rest."""
    if requested not in DATA_PATHS:
        raise AnsibleFilterError("data_path: replication_data_path is %r; choose one of %s" % (requested, ", ".join(DATA_PATHS)))
    if requested != "auto":
        return requested
    return "stream" if _bool(compress, "compress") and (source_format or "raw") == "raw" else "staged"


def snapshot_owned(snapshot, mark=None, image_name=None):
    """Whether the role may remove the snapshot: this run took it (``snapshot`` is the snapshot module's result, changed),
    or a run that kept it for resuming marked it (``mark`` is the name written in the run directory)."""
    result = _mapping(snapshot)
    if result.get("changed"):
        return True
    name = _mapping(result.get("snapshot")).get("name")
    return bool(mark) and name is not None and str(mark).strip() == name == image_name


def keep_for_resume(keep_incomplete_uploads, check_mode=False, started=False, uploaded=False):
    """Whether a run that ends now keeps its upload, snapshot and run directory for the next run to resume:
    asked to, not in check mode, and the data path started but the upload did not finish."""
    return (_bool(keep_incomplete_uploads, "keep_incomplete_uploads") and not _bool(check_mode, "check_mode")
            and _bool(started, "started") and not _bool(uploaded, "uploaded"))


def replication_result(status, catalog=None, imported=None, converted=None, uploaded=None, key=None, image=None, error=None, copied=None):
    """The record of one server (set_stats ``vmimage_replication.<server>``), the same keys for every status.

    ``catalog`` is image_info's result; ``imported`` image_import's (or the import_plan in check mode); ``converted``
    and ``uploaded`` the results of the data path's stages. ``copied`` is snapshot_copy's result (replication_mode
    snapshot_copy): ``image`` is then the snapshot taken, ``latest`` the newest copy in the target region,
    ``previous_latest`` the newest one before this run, ``pruned`` the copies deleted.
    """
    if status not in STATUSES:
        raise AnsibleFilterError("replication_result: status %r; choose one of %s" % (status, ", ".join(STATUSES)))
    record = dict.fromkeys(RESULT_KEYS)
    record.update(status=status, pruned=[], key=key, error=error)
    latest = _mapping(catalog).get("latest")
    if status == "unchanged":
        latest, converted, uploaded = _mapping(latest), _mapping(converted), _mapping(uploaded)
        # A volume read only to learn that nothing changed (no fingerprint): what the read cost, beside the latest image.
        record.update(image=latest.get("name"), latest=latest.get("name"), stored_size=latest.get("size"), seconds=_seconds(converted, uploaded),
                      virtual_size=converted.get("virtual_size"), bytes_per_second=uploaded.get("bytes_per_second"),
                      uploaded_bytes=uploaded.get("uploaded_bytes"), key=latest.get("key"), sha256=latest.get("sha256"), error=None)
    elif status == "failed":
        record.update(latest=_name(latest))
    elif copied is not None:
        record.update(_native_outcome(_mapping(copied)), image=image)
    else:
        imported, converted, uploaded = _mapping(imported), _mapping(converted), _mapping(uploaded)
        record.update(
            image=_name(imported.get("image")) or image, latest=_name(imported.get("latest")), previous_latest=_name(imported.get("previous_latest")),
            pruned=list(imported.get("pruned") or []), virtual_size=converted.get("virtual_size"), stored_size=converted.get("stored_size"),
            compression_ratio=converted.get("compression_ratio"), seconds=_seconds(converted, uploaded), bytes_per_second=uploaded.get("bytes_per_second"),
            uploaded_bytes=uploaded.get("uploaded_bytes"), resumed_parts=uploaded.get("resumed_parts"), sha256=converted.get("sha256"), error=None,
        )
    return record


def _seconds(converted, uploaded):
    """The data path's time: its conversion and upload stages together."""
    return float(converted.get("seconds") or 0) + float(uploaded.get("seconds") or 0)


def _native_outcome(copied):
    """latest / previous_latest / pruned of a snapshot_copy result (copies by id; a copy in check mode has none yet)."""
    def newest(copies):
        ordered = sorted((c for c in copies if isinstance(c, dict)), key=lambda c: (str(c.get("start_time") or ""), str(c.get("id") or "")))
        return ordered[-1].get("id") if ordered else None
    deleted = {c.get("id") for c in copied.get("deleted") or [] if isinstance(c, dict)}
    before = [c for c in copied.get("present") or [] if isinstance(c, dict)]
    kept = [c for c in before + list(copied.get("copied") or []) if c.get("id") not in deleted or not c.get("id")]
    return dict(latest=newest(kept), previous_latest=newest(before), seconds=0, pruned=sorted(i for i in deleted if i), error=None)


def conversion_host_for(pool, server, servers):
    """The conversion host of ``server`` from ``pool``: the servers of the play, in inventory order, dealt round-robin.

    The same inventory always gives the same spread (a re-run finds each server's state on the host that made it);
    each host gets at most one server more than another.
    """
    if isinstance(pool, str) or not isinstance(pool, (list, tuple)) or not pool or not all(isinstance(h, str) and h for h in pool):
        raise AnsibleFilterError("replication_conversion_hosts must be a non-empty list of inventory host names, not %r" % (pool,))
    if len(set(pool)) != len(pool):
        raise AnsibleFilterError("replication_conversion_hosts names a host twice: %s" % ", ".join(pool))
    servers = list(servers or [])
    if server not in servers:
        raise AnsibleFilterError("conversion_host_for: server %r is not among the servers of the play" % (server,))
    return pool[servers.index(server) % len(pool)]


class FilterModule:
    def filters(self):
        return {"server_unchanged": server_unchanged, "data_path": data_path, "snapshot_owned": snapshot_owned,
                "keep_for_resume": keep_for_resume, "replication_result": replication_result,
                "conversion_host_for": conversion_host_for}
