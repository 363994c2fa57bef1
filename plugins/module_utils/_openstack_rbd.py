# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The direct snapshot of a volume in Ceph (seed 002, Nova's ``direct_snapshot``): no data passes through any host.

The Cinder volume's RBD image (``<volumes_pool>/volume-<id>``) gets a protected snapshot, which is cloned into the
images pool and flattened (the clone then owes nothing to the volume); the clone gets the protected snapshot ``snap``
that Glance reads, and the volume's snapshot is removed. Glance records only the location
``rbd://<fsid>/<images_pool>/<image id>/snap`` (``POST /v2/images/{id}/locations``, which Glance allows to users with the
``service`` role). The result is a Glance image of the volume, as Nova's createImage gives for an image-backed server.

Where the path is not allowed - the volume is not in Ceph, the Ceph user may not write the images pool, Glance refuses
the location - everything it made is removed and ``snapshot`` answers ``(None, why)``: the caller takes the standard path.
The ``rbd`` and ``ceph`` commands of ceph-common run with an argv (no shell) on the host that runs the task.
"""

from __future__ import annotations

import subprocess
import uuid


class RbdError(Exception):
    pass


class Direct:
    def __init__(self, source, options, timeout=1800):
        self.source = source
        self.options = options
        self.timeout = timeout

    def _ceph(self, program, *args):
        opts = self.options
        argv = [program, "--conf", opts.get("ceph_conf") or "/etc/ceph/ceph.conf", "--id", opts.get("ceph_user") or "admin"]
        if opts.get("keyring"):
            argv += ["--keyring", opts["keyring"]]
        try:
            done = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RbdError("%s %s: %s" % (program, args[0], exc)) from None
        if done.returncode:
            raise RbdError("%s %s: %s" % (program, " ".join(args[:2]), (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]))
        return done.stdout.strip()

    def snapshot(self, volume_id, name, properties, action):
        """``(Glance image, None)`` made the direct way, or ``(None, why not)`` with nothing of it left. Anything else that
        stops it (a Glance error, the task cancelled) removes what it made too, then goes on."""
        pools = (self.options.get("volumes_pool") or "volumes", self.options.get("images_pool") or "images")
        source = "%s/volume-%s" % (pools[0], volume_id)
        image_id = str(uuid.uuid4())
        clone = "%s/%s" % (pools[1], image_id)
        source_snap = "%s@vmimage-%s" % (source, image_id[:8])
        try:
            self._ceph("rbd", "info", source)
            fsid = self._ceph("ceph", "fsid")
        except RbdError as exc:
            return None, "volume %s is not an RBD image of pool %s (%s)" % (volume_id, pools[0], exc)
        made = []  # undone in reverse: the clone (a child) before the volume's snapshot
        try:
            self._ceph("rbd", "snap", "create", source_snap)
            made.append(lambda: self._drop_snapshot(source_snap))
            self._ceph("rbd", "snap", "protect", source_snap)
            made.append(lambda: self._drop_clone(clone))
            self._ceph("rbd", "clone", source_snap, clone)
            self._ceph("rbd", "flatten", "--no-progress", clone)
            made.pop(0)()  # flattened: the clone owes the volume's snapshot nothing, which goes now
            self._ceph("rbd", "snap", "create", clone + "@snap")
            self._ceph("rbd", "snap", "protect", clone + "@snap")
            url = "rbd://%s/%s/%s/snap" % (fsid, pools[1], image_id)
            image, why = self._register(image_id, name, properties, url, action)
        except BaseException as exc:
            for undo in reversed(made):
                undo()
            if isinstance(exc, RbdError):
                return None, "Ceph refused it (%s)" % exc
            raise
        if image is None:
            for undo in reversed(made):
                undo()
        return image, why

    def _register(self, image_id, name, properties, url, action):
        """The Glance image with only the location: ``(image, None)``, or ``(None, why)`` when Glance refuses the location;
        the image record is deleted on every other way out too."""
        source = self.source
        body = dict(properties, id=image_id, name=name, disk_format="raw", container_format="bare")
        source.call(action, "Glance", lambda: source.conn.image.post("/images", json=body).json())
        try:
            answer = source.call(action, "Glance", lambda: source.conn.image.post("/images/%s/locations" % image_id, json={"url": url},
                                                                                  raise_exc=False))
            if answer.status_code >= 300:
                why = "Glance refused the location (HTTP %d: %s)" % (answer.status_code, " ".join((answer.text or "").split())[-200:])
                self._forget(image_id)
                return None, why
            return source.images.wait(source.call(action, "Glance", source.conn.image.get_image, image_id), action), None
        except BaseException:
            self._forget(image_id)
            raise

    def _forget(self, image_id):
        try:
            self.source.conn.image.delete_image(image_id, ignore_missing=True)
        except Exception:  # pylint: disable=broad-except
            pass  # the failure that brought us here is the one to report; openstack_cleanup finds a queued record

    def _drop_snapshot(self, snap):
        for step in (("snap", "unprotect", snap), ("snap", "rm", snap)):
            try:
                self._ceph("rbd", *step)
            except RbdError:
                pass  # not protected, or never made: nothing to undo

    def _drop_clone(self, clone):
        self._drop_snapshot(clone + "@snap")
        try:
            self._ceph("rbd", "rm", "--no-progress", clone)
        except RbdError:
            pass  # never made
