"""A real one-node Ceph cluster (Debian's ceph-mon and ceph-osd) for the RBD direct path: the Ceph peer.

One monitor and one OSD whose object store is in memory (``memstore``), cephx authentication, pools ``volumes`` and
``images`` (size 1), and the users a cloud gives its services: ``client.glance`` (rbd on images), ``client.vmimage``
(rbd on volumes and images: may clone into the images pool) and ``client.vmimage-ro`` (images read-only: the seed's "no
write permission on storage pool images"). Keyrings are 0600 files ``<root>/<name>.keyring``, named by ``ceph.conf``.
Both daemons run in the foreground, each in its own process group, killed by ``stop()``. Starts in about 10 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid

from tests.peers.ports import free_port, wait_listening

DAEMONS = ("ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "rbd", "ceph")
PYTHON_BINDINGS = ("/usr/lib/python3/dist-packages/rados.cpython-311-x86_64-linux-gnu.so",
                   "/usr/lib/python3/dist-packages/rbd.cpython-311-x86_64-linux-gnu.so")
USERS = {"glance": "profile rbd pool=images", "vmimage": "profile rbd pool=volumes, profile rbd pool=images",
         "vmimage-ro": "profile rbd pool=volumes, profile rbd-read-only pool=images"}


def available():
    """Why the peer cannot run here, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None] + [b for b in PYTHON_BINDINGS if not os.path.exists(b)]
    if missing:
        return "Ceph is not installed (missing %s; hack/bootstrap.sh installs ceph-mon, ceph-osd, ceph-common, python3-rbd)" % ", ".join(missing)
    if os.geteuid() != 0:
        return "the Ceph peer runs as root"
    return None


class CephPeer:
    def __init__(self, root):
        self.root = str(root)
        self.conf = os.path.join(self.root, "ceph.conf")
        self.fsid = str(uuid.uuid4())
        self.port = None
        self.processes = {}
        self.groups = set()  # process groups of the daemons (each its own), for the leftovers check

    def keyring(self, user):
        return os.path.join(self.root, "client.%s.keyring" % user)

    def python_path(self):
        """A directory holding only Debian's rados and rbd bindings, for a venv's PYTHONPATH (Glance's rbd store)."""
        path = os.path.join(self.root, "python")
        if not os.path.isdir(path):
            os.makedirs(path)
            for binding in PYTHON_BINDINGS:
                os.symlink(binding, os.path.join(path, os.path.basename(binding)))
        return path

    def _write_conf(self):
        root = self.root
        lines = ["[global]", "fsid = %s" % self.fsid, "mon host = v2:127.0.0.1:%d" % self.port, "public addr = 127.0.0.1",
                 "auth cluster required = cephx", "auth service required = cephx", "auth client required = cephx",
                 "auth allow insecure global id reclaim = false", "osd pool default size = 1", "osd pool default min size = 1",
                 "mon allow pool size one = true", "mon warn on pool no redundancy = false", "mon data avail warn = 1",
                 "osd objectstore = memstore", "memstore device bytes = 2147483648", "osd crush chooseleaf type = 0",
                 "run dir = %s/run" % root, "log file = %s/$name.log" % root, "admin socket = %s/run/$name.asok" % root,
                 "mon data = %s/mon/$name" % root, "osd data = %s/osd/$name" % root, "keyring = %s/$name.keyring" % root,
                 # the monitor's cluster and audit logs too (by default under /var/log/ceph, outside the test's directory)
                 "mon cluster log file = default=%s/$channel.log cluster=%s/cluster.log" % (root, root)]
        with open(os.open(self.conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def run(self, *args, user="admin"):
        """``ceph`` / ``rbd`` / tool ``args`` against this cluster as ``client.<user>``; its stdout."""
        argv = list(args[:1]) + ["--conf", self.conf] + (["--id", user] if args[0] in ("ceph", "rbd") else []) + list(args[1:])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(args[:3]), done.returncode, done.stderr.strip()[-500:]))
        return done.stdout

    def _daemon(self, name, argv):
        log = open(os.path.join(self.root, "%s.stdout" % name), "ab")  # pylint: disable=consider-using-with
        self.processes[name] = subprocess.Popen(argv + ["-f", "--conf", self.conf], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.groups.add(self.processes[name].pid)
        log.close()

    def start(self):
        began = time.monotonic()
        self.port = free_port()
        for sub in ("run", "mon/mon.a", "osd/osd.0"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)
        self._write_conf()
        try:
            mon_keyring, admin = os.path.join(self.root, "mon..keyring"), self.keyring("admin")
            subprocess.run(["ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *"],
                           check=True, capture_output=True)
            subprocess.run(["ceph-authtool", "--create-keyring", admin, "--gen-key", "-n", "client.admin", "--cap", "mon", "allow *",
                            "--cap", "osd", "allow *", "--cap", "mgr", "allow *"], check=True, capture_output=True)
            subprocess.run(["ceph-authtool", mon_keyring, "--import-keyring", admin], check=True, capture_output=True)
            monmap = os.path.join(self.root, "monmap")
            subprocess.run(["monmaptool", "--create", "--add", "a", "v2:127.0.0.1:%d" % self.port, "--fsid", self.fsid, monmap],
                           check=True, capture_output=True)
            subprocess.run(["ceph-mon", "--conf", self.conf, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", mon_keyring],
                           check=True, capture_output=True)
            self._daemon("mon", ["ceph-mon", "-i", "a"])
            wait_listening("127.0.0.1", self.port, timeout=60, process=self.processes["mon"])
            osd_uuid = str(uuid.uuid4())
            self.run("ceph", "osd", "new", osd_uuid)
            osd_keyring = os.path.join(self.root, "osd.0.keyring")
            self.run("ceph", "auth", "get-or-create", "osd.0", "mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd",
                     "-o", osd_keyring)
            subprocess.run(["ceph-osd", "--conf", self.conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], check=True, capture_output=True)
            self._daemon("osd", ["ceph-osd", "-i", "0"])
            for pool in ("volumes", "images"):
                self.run("ceph", "osd", "pool", "create", pool, "8")
                self.run("rbd", "pool", "init", pool)
            for user, osd_caps in USERS.items():
                self.run("ceph", "auth", "get-or-create", "client.%s" % user, "mon", "profile rbd", "osd", osd_caps, "-o", self.keyring(user))
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def images(self, pool):
        """The RBD images of ``pool`` and their snapshots: ``{image: [snapshot names]}``."""
        names = json.loads(self.run("rbd", "ls", "--format", "json", pool) or "[]")
        return {n: [s["name"] for s in json.loads(self.run("rbd", "snap", "ls", "--format", "json", "%s/%s" % (pool, n)) or "[]")]
                for n in names}

    def purge(self, pool):
        """Remove every RBD image of ``pool`` with its snapshots (a test starts from empty pools)."""
        for image, snaps in self.images(pool).items():
            for snap in snaps:
                subprocess.run(["rbd", "--conf", self.conf, "snap", "unprotect", "%s/%s@%s" % (pool, image, snap)], capture_output=True, check=False)
            self.run("rbd", "snap", "purge", "--no-progress", "%s/%s" % (pool, image))
            self.run("rbd", "rm", "--no-progress", "%s/%s" % (pool, image))

    def stop(self):
        for name in ("osd", "mon"):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(20)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left of its group (a daemon's helper still exiting)
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(10)
