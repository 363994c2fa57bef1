"""Real Keystone and two real Glance regions, from PyPI, as subprocesses: the OpenStack peer.

Keystone (SQLite, fernet tokens) and one Glance per region (SQLite, file store, their own directories) are served by
gunicorn from their own venv (``.build/venv-openstack``, made by hack/bootstrap.sh), on free loopback ports. Keystone is
bootstrapped with an admin user in project ``admin``, regions ``RegionOne`` and ``RegionTwo`` and an image endpoint per
region. RegionOne's Glance accepts only raw disks (so a refused format can be tested against the real answer);
RegionTwo's accepts the usual formats. openstacksdk reaches them through a generated ``clouds.yaml`` (cloud ``peer``).
Passwords are only in 0600 files under the peer's directory and in the environment of the setup commands, never on a
command line. Each service runs in its own process group, killed by ``stop()``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

from tests.peers.ceph import CephPeer
from tests.peers.ceph import available as ceph_available
from tests.peers.ports import free_port, wait_listening

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.environ.get("VMIMAGE_OPENSTACK_VENV", os.path.join(ROOT, ".build", "venv-openstack"))
REGIONS = ("RegionOne", "RegionTwo")
DISK_FORMATS = {"RegionOne": "raw", "RegionTwo": "raw,qcow2,vmdk,vhd,vhdx,vdi,iso"}
# RegionTwo's operator allows web-download from any port of host 127.0.0.1 (Glance refuses loopback hosts not listed, so
# the same S3 server named "localhost" is refused: one Glance both takes and refuses a URL).
IMPORT_METHODS = {"RegionOne": "[glance-direct]", "RegionTwo": "[glance-direct,web-download]"}

# Keystone parses sys.argv when its application is built; under gunicorn that is gunicorn's command line.
KEYSTONE_WSGI = """\
import sys
sys.argv = sys.argv[:1]
from keystone.server import wsgi
application = wsgi.initialize_public_application()
"""


def available():
    """Why the peer cannot start here, or None."""
    for program in ("gunicorn", "keystone-manage", "glance-manage"):
        if not os.access(os.path.join(VENV, "bin", program), os.X_OK):
            return "%s/bin/%s is missing; run hack/bootstrap.sh" % (VENV, program)
    return None


def _write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


class OpenStackPeer:
    """Keystone + Glance per region. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self, root, host="127.0.0.1"):
        self.root, self.host = str(root), host
        self.password = "os-" + secrets.token_urlsafe(18)
        self.operator_password = "op-" + secrets.token_urlsafe(18)
        self._ceph_job = None
        # RegionOne's Glance stores images in Ceph too (the RBD direct path) where Ceph is installed.
        self.ceph = CephPeer(os.path.join(self.root, "ceph")) if ceph_available() is None else None
        self.processes = {}
        self.groups = set()
        self.ports = {}
        self.start_seconds = None
        self.clouds_yaml = os.path.join(self.root, "clouds.yaml")

    # --- what tests use ---------------------------------------------------------------------------------------------------------
    @property
    def auth_url(self):
        return "http://%s:%d/v3" % (self.host, self.ports["keystone"])

    def auth(self, password=None):
        return {"auth_url": self.auth_url, "username": "admin", "password": password or self.password, "project_name": "admin",
                "user_domain_name": "Default", "project_domain_name": "Default"}

    def glance_url(self, region):
        return "http://%s:%d" % (self.host, self.ports[region])

    def connect(self, region="RegionTwo"):
        import openstack  # pylint: disable=import-outside-toplevel

        return openstack.connect(auth=self.auth(), region_name=region, interface="public", load_yaml_config=False, load_envvars=False)

    def env(self):
        """Environment that points openstacksdk at the generated clouds.yaml."""
        return {"OS_CLIENT_CONFIG_FILE": self.clouds_yaml}

    # --- lifecycle --------------------------------------------------------------------------------------------------------------
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        reason = available()
        if reason:
            raise RuntimeError(reason)
        began = time.monotonic()
        for name in ("keystone",) + REGIONS:
            self.ports[name] = free_port(self.host)
        try:
            if self.ceph is not None:
                os.makedirs(self.ceph.root, mode=0o700)
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                # RegionOne's Glance configures its Ceph store when it starts: Ceph first.
                self._ceph_job = pool.submit(self.ceph.start) if self.ceph is not None else None
                jobs = [pool.submit(self._setup_keystone)] + [pool.submit(self._setup_glance, region) for region in REGIONS]
                jobs += [self._ceph_job] if self._ceph_job is not None else []
                for job in jobs:
                    job.result()
            self._register_endpoints()
            for name in ("keystone",) + REGIONS:
                self._wait_http(name)
        except BaseException:
            self.stop()
            raise
        self._write_clouds_yaml()
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self):
        try:
            if self.ceph is not None:
                self.ceph.stop()
        finally:
            self._stop_services()

    def _stop_services(self):
        for name, process in list(self.processes.items()):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):  # reaped below with the rest of its group
                    process.wait(15)
            self._reap_group(process.pid)
            del self.processes[name]

    @staticmethod
    def _reap_group(pgid):
        """Kill what is left of a process group (gunicorn workers that outlived their arbiter)."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def leftovers(self):
        """Processes of the peer's process groups still alive (their pids); empty after ``stop()``."""
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % pid, encoding="utf-8") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                state, pgid = fields[0], int(fields[2])
            except (OSError, ValueError, IndexError):
                continue
            if state == "Z":  # killed, not yet reaped by init: gone
                continue
            if pgid in self.groups or (self.ceph is not None and pgid in self.ceph.groups):
                found.append(int(pid))
        return found

    # --- keystone ---------------------------------------------------------------------------------------------------------------
    def _run(self, what, args, env=None, cwd=None):
        full = dict(os.environ, **(env or {}))
        done = subprocess.run(args, capture_output=True, text=True, env=full, cwd=cwd, check=False, timeout=300)
        if done.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (what, done.returncode, (done.stderr or done.stdout)[-2000:]))

    def _setup_keystone(self):
        base = os.path.join(self.root, "keystone")
        os.makedirs(base, mode=0o700)
        conf = os.path.join(base, "keystone.conf")
        _write(conf, textwrap.dedent("""\
            [DEFAULT]
            log_file = {base}/keystone.log
            [database]
            connection = sqlite:///{base}/keystone.db
            [token]
            provider = fernet
            [fernet_tokens]
            key_repository = {base}/fernet-keys
            [credential]
            key_repository = {base}/credential-keys
            """).format(base=base))
        manage = [os.path.join(VENV, "bin", "keystone-manage"), "--config-file", conf]
        user = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
        steps = [("keystone-manage db_sync", manage + ["db_sync"]), ("keystone-manage fernet_setup", manage + ["fernet_setup"] + user),
                 ("keystone-manage credential_setup", manage + ["credential_setup"] + user)]
        with concurrent.futures.ThreadPoolExecutor(len(steps)) as pool:  # independent; each pays keystone's import time
            for job in [pool.submit(self._run, *step) for step in steps]:
                job.result()
        _write(os.path.join(base, "keystone_wsgi.py"), KEYSTONE_WSGI)
        # The application loads while bootstrap writes the admin user (it needs no user to start).
        self._serve("keystone", "keystone_wsgi:application", base, {"OS_KEYSTONE_CONFIG_FILES": conf, "PYTHONPATH": base})
        bootstrap = ["bootstrap", "--bootstrap-username", "admin", "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
                     "--bootstrap-region-id", REGIONS[0], "--bootstrap-public-url", self.auth_url]
        self._run("keystone-manage bootstrap", manage + bootstrap, env={"OS_BOOTSTRAP_PASSWORD": self.password})

    def _serve(self, name, app, base, env):
        args = [os.path.join(VENV, "bin", "gunicorn"), "--no-control-socket", "--bind", "%s:%d" % (self.host, self.ports[name]),
                "--workers", "1", "--threads", "4", "--timeout", "600", "--chdir", base, "--error-logfile", os.path.join(base, "gunicorn.log"),
                "--pid", os.path.join(base, "gunicorn.pid"), app]
        with open(os.path.join(base, "stdout.log"), "ab") as log:
            self.processes[name] = subprocess.Popen(args, cwd=base, env=dict(os.environ, **env), stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.groups.add(self.processes[name].pid)

    def _register_endpoints(self):
        wait_listening(self.host, self.ports["keystone"], timeout=120, process=self.processes["keystone"])
        import openstack  # pylint: disable=import-outside-toplevel

        conn = openstack.connect(auth=self.auth(), region_name=REGIONS[0], load_yaml_config=False, load_envvars=False)
        deadline = time.monotonic() + 60
        while True:  # gunicorn listens before the application is loaded
            try:
                conn.authorize()
                break
            except Exception:  # noqa: BLE001 - retried until the deadline, then raised
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.identity.create_region(id=REGIONS[1])
        # The service role (Glance lets only services add rbd:// locations) for admin; an operator without it.
        project = conn.identity.find_project("admin")
        admin = conn.identity.find_user("admin")
        service = conn.identity.find_role("service") or conn.identity.create_role(name="service")  # bootstrap makes it in recent Keystones
        conn.identity.assign_project_role_to_user(project, admin, service)
        operator = conn.identity.create_user(name="operator", password=self.operator_password, default_project_id=project.id)
        conn.identity.assign_project_role_to_user(project, operator, conn.identity.find_role("member"))
        service = conn.identity.create_service(name="glance", type="image")
        for region in REGIONS:
            conn.identity.create_endpoint(service_id=service.id, interface="public", url=self.glance_url(region), region_id=region)
        conn.close()

    # --- glance -----------------------------------------------------------------------------------------------------------------
    def _setup_glance(self, region):
        base = os.path.join(self.root, "glance-%s" % region)
        for sub in ("", "/images", "/staging", "/tasks", "/lock"):
            os.makedirs(base + sub, mode=0o700, exist_ok=True)
        shutil.copy(os.path.join(VENV, "etc", "glance", "glance-api-paste.ini"), base)
        _write(os.path.join(base, "glance-api.conf"), textwrap.dedent("""\
            [DEFAULT]
            log_file = {base}/glance.log
            enabled_backends = local:file{rbd_backend}
            worker_self_reference_url = {url}
            enabled_import_methods = {import_methods}
            image_size_cap = 10737418240
            lock_path = {base}/lock
            [database]
            connection = sqlite:///{base}/glance.db
            [glance_store]
            default_backend = local
            [local]
            filesystem_store_datadir = {base}/images
            {rbd_section}
            [os_glance_staging_store]
            filesystem_store_datadir = {base}/staging
            [os_glance_tasks_store]
            filesystem_store_datadir = {base}/tasks
            [oslo_concurrency]
            lock_path = {base}/lock
            [image_format]
            disk_formats = {formats}
            [import_filtering_opts]
            allowed_ports = []
            allowed_hosts = [127.0.0.1]
            [paste_deploy]
            flavor = keystone
            [keystone_authtoken]
            www_authenticate_uri = {auth}
            auth_url = {auth}
            auth_type = password
            username = admin
            password = {password}
            project_name = admin
            user_domain_name = Default
            project_domain_name = Default
            interface = public
            """).format(base=base, url=self.glance_url(region), formats=DISK_FORMATS[region], import_methods=IMPORT_METHODS[region], **self._rbd_store(region),
                        auth=self.auth_url, password=self.password, region=region))
        env = {"OS_GLANCE_CONFIG_DIR": base}
        if region == REGIONS[0] and self.ceph is not None:
            env["PYTHONPATH"] = self.ceph.python_path()
            self._ceph_job.result()
        self._run("glance-manage db_sync (%s)" % region, [os.path.join(VENV, "bin", "glance-manage"), "--config-dir", base, "db_sync"], env=env)
        self._serve(region, "glance.wsgi.api:application", base, env)

    def _rbd_store(self, region):
        """RegionOne's Glance has a second store, ``ceph``: Ceph's images pool as client.glance."""
        if region != REGIONS[0] or self.ceph is None:
            return {"rbd_backend": "", "rbd_section": ""}
        os.makedirs(self.ceph.root, mode=0o700, exist_ok=True)
        section = "[ceph]\nrbd_store_pool = images\nrbd_store_user = glance\nrbd_store_ceph_conf = %s\nrbd_store_chunk_size = 4" % self.ceph.conf
        return {"rbd_backend": ", ceph:rbd", "rbd_section": section}

    def _wait_http(self, name, timeout=120.0):
        """Until the service answers HTTP (gunicorn binds before the application is built)."""
        url = self.auth_url if name == "keystone" else self.glance_url(name) + "/versions"
        deadline = time.monotonic() + timeout
        while True:
            if self.processes[name].poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (name, self.processes[name].returncode, self.root))
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback URL we built
                    if answer.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("%s does not answer at %s after %ss" % (name, url, timeout))
            time.sleep(0.2)

    def _write_clouds_yaml(self):
        auth = self.auth()
        lines = ["clouds:", "  peer:", "    auth:"] + ["      %s: %s" % (k, v) for k, v in auth.items()]
        lines += ["    regions: [%s]" % ", ".join(REGIONS), "    interface: public", "    identity_api_version: 3"]
        operator = dict(auth, username="operator", password=self.operator_password)
        lines += ["  peer-operator:", "    auth:"] + ["      %s: %s" % (k, v) for k, v in operator.items()]
        lines += ["    regions: [%s]" % ", ".join(REGIONS), "    interface: public", "    identity_api_version: 3"]
        _write(self.clouds_yaml, "\n".join(lines) + "\n")


_SHARED = {}


def _describe(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return "%d %s" % (pid, handle.read().replace(b"\0", b" ").decode(errors="replace").strip())
    except OSError:
        return "%d (gone)" % pid


def session_peer(request, tmp_path_factory):
    """The one peer of this test session (several session fixtures may ask; the first one to ask stops it at the end).

    Skips when the peer's venv is not there; the start time is ``peer.start_seconds`` (printed, seen with -s)."""
    import pytest  # pylint: disable=import-outside-toplevel

    reason = available()
    if reason:
        pytest.skip(reason)
    if "peer" not in _SHARED:
        peer = OpenStackPeer(tmp_path_factory.mktemp("openstack"))

        def finish():
            _SHARED.pop("peer", None)
            peer.stop()
            deadline = time.monotonic() + 5
            left = peer.leftovers()
            while left and time.monotonic() < deadline:  # a killed process may take a moment to go
                time.sleep(0.2)
                left = peer.leftovers()
            assert not left, "OpenStack peer processes left after stop: %s" % [_describe(pid) for pid in left]

        request.addfinalizer(finish)
        peer.start()
        _SHARED["peer"] = peer
        print("OpenStack peer (Keystone + 2 Glance) started in %.1f s" % peer.start_seconds)
    return _SHARED["peer"]


def main():
    """Start the peer, print the start time, stop it (python -m tests.peers.openstack DIR)."""
    root = sys.argv[1]
    with OpenStackPeer(root) as peer:
        print("started in %.1f s: keystone %s, glance %s" % (peer.start_seconds, peer.auth_url, [peer.glance_url(r) for r in REGIONS]))
        conn = peer.connect()
        print([i.name for i in conn.image.images()])
    print("left:", peer.leftovers())


if __name__ == "__main__":
    main()
