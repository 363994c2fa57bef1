# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Provider ``local``: a server is its disk image files or block devices on the managed host.

Snapshots are those of ``_local_snapshot`` in ``snapshot_dir``. The conversion host is the managed
host itself, so "attaching a volume made from a snapshot" exposes the snapshot's data file as the
device, or, with ``loop: true``, a read-only loop device over it (``volume_detach`` detaches it).
"""

from __future__ import annotations

import glob
import os
import subprocess

from ansible_collections.vmimage.replication.plugins.module_utils import _files, _local_snapshot, _naming, _providers
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

# The options of this provider (module option group "provider", doc fragment vmimage.replication.provider).
OPTIONS = dict(
    snapshot_dir=dict(type="path"),
    loop=dict(type="bool", default=False),
)

_SYS_LOOP = "/sys/block"


def _loops_of(path):
    """The loop devices whose backing file is ``path`` (also once it was deleted)."""
    path = os.path.abspath(path)
    found = []
    for backing in sorted(glob.glob(os.path.join(_SYS_LOOP, "loop*", "loop", "backing_file"))):
        try:
            with open(backing, encoding="utf-8") as handle:
                target = handle.read().strip()
        except OSError:
            continue
        if target in (path, path + " (deleted)"):
            found.append("/dev/" + backing.split(os.sep)[-3])
    return found


def _losetup(args, what):
    proc = subprocess.run(["losetup"] + args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReplicationError("Failed to %s: losetup says %s; run as root on a host with loop devices, or set loop=false"
                               % (what, proc.stderr.strip() or "exit %d" % proc.returncode))
    return proc.stdout.strip()


class Source(_providers.Source):
    name = "local"

    def _dir(self, action):
        snapshot_dir = self.params.get("snapshot_dir")
        if not snapshot_dir:
            raise ReplicationError("Failed to %s: provider local needs the option snapshot_dir (the directory that holds the snapshots)" % action)
        return snapshot_dir

    def _record(self, name, action):
        snapshot_dir = self._dir(action)
        record = _local_snapshot.load(snapshot_dir, name)
        if record is None or not os.path.exists(record.get("path", "")):
            known = ", ".join(r["name"] for r in _local_snapshot.list_snapshots(snapshot_dir)) or "none"
            raise ReplicationError("Failed to %s: no snapshot %s in %s (known: %s); check the name" % (action, name, snapshot_dir, known), name=name)
        return record

    @staticmethod
    def public(record):
        snapshot = _local_snapshot.public(record)
        snapshot["id"] = record["name"]
        return snapshot

    # --- the server -----------------------------------------------------------------------

    def _volume(self, path):
        kind, size = _local_snapshot.inspect_volume(path)
        path = os.path.abspath(path)
        return {"id": path, "name": os.path.basename(path), "size": size, "profile": kind, "zone": None,
                "format": _local_snapshot.detect_format(path), "fingerprint": _files.fingerprint(path)}

    def server_info(self, server):
        volumes = [os.path.expanduser(v) for v in self.params.get("volumes") or []]
        if not volumes:
            raise ReplicationError("Failed to find server %s: provider local needs its volumes (the disk image files or block devices "
                                   "of the server, boot volume first); set the option volumes" % server)
        try:
            _naming.check_server(server)
        except ValueError as exc:
            raise ReplicationError("Failed to find server %s: %s" % (server, exc)) from None
        found = []
        for path in volumes:
            if not os.path.exists(path):
                raise ReplicationError("Failed to find server %s: its volume %s does not exist; check the server's volumes" % (server, path),
                                       server=server)
            found.append(self._volume(path))
        latest = None
        if self.params.get("snapshot_dir"):
            snaps = _local_snapshot.list_snapshots(self.params["snapshot_dir"], volume=found[0]["id"])
            latest = self.public(snaps[-1]) if snaps else None
        return {"name": server, "id": server, "zone": None, "profile": None, "os": None, "boot_volume": found[0], "volumes": found,
                "latest_snapshot": latest}

    def volume_fingerprint(self, volume):
        volume = os.path.expanduser(volume)
        return _files.fingerprint(volume) if os.path.exists(volume) else None

    # --- snapshots ------------------------------------------------------------------------

    def snapshot_create(self, volume, server=None, name=None, check_mode=False):
        snapshot_dir = self._dir("snapshot volume %s" % volume)
        record, changed = _local_snapshot.create(os.path.expanduser(volume), snapshot_dir, server=server, name=name, check_mode=check_mode)
        return self.public(record), changed

    def snapshot_list(self, server=None, volume=None, name=None):
        volume = os.path.expanduser(volume) if volume else None
        return [self.public(r) for r in _local_snapshot.list_snapshots(self._dir("list snapshots"), server=server, volume=volume, name=name)]

    def snapshot_delete(self, name, check_mode=False):
        snapshot_dir = self._dir("remove snapshot %s" % name)
        side = _local_snapshot.sidecar_path(snapshot_dir, name)
        if _local_snapshot.load(snapshot_dir, name) is None and os.path.exists(side):
            raise ReplicationError("Failed to remove snapshot %s: %s was not made by %s; remove it by hand if it is no longer needed"
                                   % (name, side, _naming.CREATED_BY), name=name)
        record, changed = _local_snapshot.remove(snapshot_dir, name, check_mode=check_mode)
        return (self.public(record) if record else None), changed

    def snapshot_restore(self, name, volume=None, check_mode=False):
        snapshot_dir = self._dir("restore snapshot %s" % name)
        volume = os.path.expanduser(volume) if volume else None
        record, changed = _local_snapshot.restore(snapshot_dir, name, volume=volume, check_mode=check_mode)
        return self.public(record), changed

    # --- the volume on the conversion host ------------------------------------------------

    def volume_attach(self, snapshot, host, check_mode=False):
        record = self._record(snapshot, "attach a volume from snapshot %s" % snapshot)
        path = os.path.abspath(record["path"])
        attachment = {"volume_id": path, "attachment_id": None, "device": path, "host": host or "localhost", "snapshot": record["name"]}
        if not self.params.get("loop"):
            return attachment, False
        existing = _loops_of(path)
        if existing:
            attachment.update(attachment_id=existing[0], device=existing[0])
            return attachment, False
        if check_mode:
            attachment.update(device=None)
            return attachment, True
        device = _losetup(["--find", "--show", "--read-only", path], "attach snapshot %s as a loop device" % snapshot)
        attachment.update(attachment_id=device, device=device)
        return attachment, True

    def volume_detach(self, attachment, check_mode=False):
        # Only loop devices that the snapshot's file backs now: a device named in an old answer may be another's by now.
        name = attachment.get("snapshot")
        path = attachment.get("volume_id")
        if not path and name and self.params.get("snapshot_dir"):
            record = _local_snapshot.load(self.params["snapshot_dir"], name)
            path = record and record.get("path")
        devices = _loops_of(path) if path else []
        result = dict(attachment, device=None, attachment_id=None)
        if not devices:
            return result, False
        if not check_mode:
            for dev in devices:
                _losetup(["--detach", dev], "detach loop device %s of snapshot %s" % (dev, name or path))
        return result, True
