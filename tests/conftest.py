"""Shared fixtures: the collection on the import path, real S3 servers, module harness."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / ".build" / "pytest-collections"
_LINK = COLLECTIONS / "ansible_collections" / "vmimage" / "replication"
if not _LINK.exists():
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    _LINK.symlink_to(ROOT, target_is_directory=True)
for entry in (str(ROOT), str(COLLECTIONS)):
    if entry not in sys.path:
        sys.path.insert(0, entry)
os.environ["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)

from tests import leftovers  # noqa: E402
from tests.harness import run_module  # noqa: E402
from tests.peers import s3  # noqa: E402
# Fixtures: one moto server for the whole run.
from tests.peers.moto import moto_server, moto_session  # noqa: E402,F401  # pylint: disable=unused-import


_SHARED_TMP = pytest.StashKey()


def _controller(config):
    """True in the process that runs the session as a whole: the only one, or pytest-xdist's controller (not a worker)."""
    return not hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """The controller lists /tmp (and $TMPDIR) before any worker starts: the leftover check covers the whole run."""
    if _controller(session.config):
        dirs = leftovers.shared_dirs()
        session.config.stash[_SHARED_TMP] = (dirs, leftovers.snapshot(dirs))


def pytest_sessionfinish(session):
    """Once every worker has stopped its peers: fail the run, naming every leftover, if /tmp gained any."""
    if not _controller(session.config) or _SHARED_TMP not in session.config.stash:
        return
    dirs, before = session.config.stash[_SHARED_TMP]
    left = leftovers.leftovers(before, leftovers.snapshot(dirs))
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")
            reporter.write_line(leftovers.failure_message(left), red=True, bold=True)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, tests that share a module-scoped fixture run on one worker.

    Such a fixture is built once per worker that needs it: on one worker it is built once (a module's pip installs,
    a 256 MiB disk), and what it holds (a login made with useradd, a host's directories) is never made twice at once.
    """
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if item.get_closest_marker("xdist_group") is not None:
            continue  # a group named by the test's author wins: joined with ours it would be a group of its own
        if info is not None and any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        for item in items:
            _group_suffix(item)


def _group_suffix(item):
    """Give an xdist_group test the "@<group>" node id suffix the loadgroup scheduler reads.

    pytest-xdist 3.8.0 writes it to ``item._nodeid``, which pytest 9.2 no longer reads (node ids are structured), so
    without this every group is silently spread over the workers (pytest-dev/pytest-xdist#1386).
    """
    from _pytest.nodeid import coerce_node_id

    names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in item.iter_markers("xdist_group")})
    suffix = "@" + "_".join(names)
    if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
        item._id = coerce_node_id(item.nodeid + suffix)


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory):
    """Point TMPDIR (and tempfile) of this process (each xdist worker: its own) at a pytest tmp dir."""
    private = str(tmp_path_factory.mktemp("tmpdir"))
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = private
    yield private
    tempfile.tempdir = saved_tempdir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


@pytest.fixture(scope="session", autouse=True)
def shared_payload_cache(request, tmp_path_factory):
    """One cache of Ansible's module payloads for every playbook run of the session, xdist workers included.

    tests/peers/ansible_plugins/callback/shared_payload_cache.py explains why; tests/peers/runner.py passes it on.
    """
    base = tmp_path_factory.getbasetemp()
    if not _controller(request.config):
        base = base.parent  # pytest-xdist: the workers' basetemps sit in the run's own
    os.environ["VMI_TEST_PAYLOAD_CACHE"] = str(base / "ansiballz-cache")
    yield
    os.environ.pop("VMI_TEST_PAYLOAD_CACHE", None)


# Realistic keys: rclone refuses very short ones, and the leak tests search for them.
ACCESS_KEY_ID = "AKIAVMIMAGE7TESTKEY01"
SECRET_ACCESS_KEY = "vmImgSecret/3f9KqLxZ8wPn2VbT6yRu1sEoA4dHcJ"


@pytest.fixture(scope="session")
def s3_rclone(tmp_path_factory):
    server = s3.start_rclone(str(tmp_path_factory.mktemp("rclone")), ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_seaweedfs(tmp_path_factory):
    server = s3.start_seaweedfs(str(tmp_path_factory.mktemp("seaweedfs")), ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    yield server
    server.stop()


@pytest.fixture(params=["rclone", "seaweedfs"])
def s3_server(request):
    """Each test that takes this runs once against each S3 server."""
    return request.getfixturevalue("s3_%s" % request.param)


@pytest.fixture
def bucket(s3_server):
    """A fresh bucket on the S3 server of this test."""
    return s3_server.make_bucket("t-%s" % uuid.uuid4().hex[:16])


@pytest.fixture
def module_runner():
    return run_module


@pytest.fixture
def attach_loop():
    """``attach_loop(path, read_only=False)`` -> a real block device (loop) over ``path``, detached afterwards; skips where none can be made."""
    devices = []

    def attach(path, read_only=False):
        proc = subprocess.run(["losetup", "-f", "--show"] + (["-r"] if read_only else []) + [str(path)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            pytest.skip("cannot attach a loop device here: %s" % proc.stderr.strip())
        devices.append(proc.stdout.strip())
        return devices[-1]
    yield attach
    for device in devices:
        subprocess.run(["losetup", "-d", device], check=False)


# --- sshd test hosts (tests/peers/sshd.py) -------------------------------------------------


@pytest.fixture(scope="session")
def sshd_factory(tmp_path_factory):
    """``make(host="127.0.0.2")`` -> a running SshdHost on that loopback address (one per address).

    Hosts share this machine's filesystem: give each its own directories. All stop at session end.
    """
    from tests.peers import sshd

    started = {}

    def make(host="127.0.0.2"):
        if host not in started:
            started[host] = sshd.start(str(tmp_path_factory.mktemp("sshd-%s" % host)), host=host)
        return started[host]

    yield make
    for server in started.values():
        server.stop()


@pytest.fixture(scope="session")
def sshd_host(sshd_factory):
    """A real sshd on 127.0.0.2: root by key only. ``.inventory_vars()`` gives Ansible host vars."""
    return sshd_factory("127.0.0.2")
