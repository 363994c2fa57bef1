"""_consistency against libvirt's test driver (libvirt-python): freeze -> snapshot -> thaw, and the thaw on every failure path.

The test driver starts each connection from its node XML, so each test keeps one
connection and asks that same connection whether the guest is thawed: a freeze of a
thawed guest freezes its two file systems, of a frozen one none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sys
import threading
import time

import pytest

libvirt = pytest.importorskip("libvirt")

from tests.contract import assert_return_contract  # noqa: E402

from ansible_collections.vmimage.replication.plugins.module_utils import _consistency  # noqa: E402
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError  # noqa: E402

NODE = """<node>
  <domain type="test">
    <name>web01</name>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <disk type="file" device="disk"><source file="%s"/><driver name="qemu" type="raw"/><target dev="vda"/></disk>
    </devices>
  </domain>
</node>
"""


class AgentMissing(libvirt.libvirtError):
    def get_error_code(self):
        return libvirt.VIR_ERR_AGENT_UNRESPONSIVE


class Recorder:
    """The real domain, recording freeze/thaw calls; a freeze can be made to hang or fail, a thaw to fail."""

    def __init__(self, domain):
        self.real = domain
        self.calls = []
        self.hang = None  # threading.Event the freeze waits for
        self.freeze_error = None
        self.thaw_failures = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def fsFreeze(self, mountpoints=None, flags=0):  # noqa: N802 - libvirt's name
        self.calls.append(("freeze", mountpoints))
        if self.hang is not None:
            self.hang.wait(10)
        if self.freeze_error is not None:
            raise self.freeze_error
        return self.real.fsFreeze(mountpoints, flags)

    def fsThaw(self, mountpoints=None, flags=0):  # noqa: N802 - libvirt's name
        self.calls.append(("thaw", mountpoints))
        if self.thaw_failures:
            self.thaw_failures -= 1
            raise libvirt.libvirtError("injected: guest agent did not answer the thaw")
        return self.real.fsThaw(mountpoints, flags)

    def count(self, what):
        return sum(1 for call in self.calls if call[0] == what)


def thawed(domain):
    """Ask libvirt: every file system of the guest is thawed (a freeze then freezes both; undone at once)."""
    froze = domain.fsFreeze()
    domain.fsThaw()
    return froze == 2


@pytest.fixture
def guest(tmp_path):
    disk = tmp_path / "web01.img"
    disk.write_bytes(os.urandom(1 << 20))
    node = tmp_path / "node.xml"
    node.write_text(NODE % disk)
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open("test://%s" % node)
    rec = Recorder(conn.lookupByName("web01"))
    rec.disk, rec.conn = disk, conn
    yield rec
    if rec.hang is not None:
        rec.hang.set()
    conn.close()


def _copier(guest, dest, check=None):
    def snapshot():
        if check:
            check()
        shutil.copyfile(guest.disk, dest)
        return str(dest)
    return snapshot


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_freeze_snapshot_thaw_reports_and_copies_the_bytes(guest, tmp_path):
    seen = {}
    dest = tmp_path / "snap.img"
    result, report = _consistency.consistent(_copier(guest, dest, lambda: seen.update(frozen=guest.real.fsFreeze() == 0)), "required",
                                             domain=guest)
    assert result == str(dest) and _sha(dest) == _sha(guest.disk)
    assert seen["frozen"] is True  # libvirt had the guest frozen while the snapshot ran
    assert report["state"] == "frozen" and report["frozen_filesystems"] == ["/", "/boot"] and report["frozen_count"] == 2
    assert 0 < report["frozen_seconds"] < 5 and report["domain"] == "web01" and report["mode"] == "required"
    assert guest.calls == [("freeze", None), ("thaw", None)] and thawed(guest.real)


def test_freeze_of_one_mountpoint(guest, tmp_path):
    _unused, report = _consistency.consistent(_copier(guest, tmp_path / "s"), "crash", domain=guest, mountpoints=["/boot"])
    assert report["frozen_filesystems"] == ["/boot"] and report["frozen_count"] == 1
    assert guest.calls == [("freeze", ["/boot"]), ("thaw", ["/boot"])] and thawed(guest.real)


def test_snapshot_raising_still_thaws_and_runs_the_post_hook(guest, tmp_path):
    mark = tmp_path / "post-ran"

    def boom():
        raise RuntimeError("disk vanished")
    with pytest.raises(RuntimeError, match="disk vanished"):
        _consistency.consistent(boom, "required", domain=guest, pre_hook=["true"], post_hook=["touch", str(mark)])
    assert guest.count("thaw") == 1 and thawed(guest.real) and mark.exists()


def test_hanging_freeze_times_out_thaws_and_a_late_freeze_is_undone(guest, tmp_path):
    guest.hang = threading.Event()
    called = []
    start = time.monotonic()
    with pytest.raises(ReplicationError, match=r"did not return within 0.3 s \(freeze_timeout\)") as err:
        _consistency.consistent(lambda: called.append(1), "required", domain=guest, freeze_timeout=0.3)
    assert time.monotonic() - start < 3 and not called and guest.count("thaw") == 1
    assert err.value.details["consistency"]["state"] == "none"
    guest.hang.set()  # the freeze returns late and freezes the guest: it is thawed again at once
    deadline = time.monotonic() + 5
    while guest.count("thaw") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert guest.count("thaw") == 2
    guest.hang = None
    assert thawed(guest.real)


def test_snapshot_longer_than_max_frozen_is_interrupted_and_thawed(guest, tmp_path):
    start = time.monotonic()
    with pytest.raises(ReplicationError, match=r"longer than 0.3 s \(max_frozen\)") as err:
        _consistency.consistent(lambda: time.sleep(10), "required", domain=guest, max_frozen=0.3)
    assert time.monotonic() - start < 3 and guest.count("thaw") == 1 and thawed(guest.real)
    assert 0.25 < err.value.details["consistency"]["frozen_seconds"] < 3


def test_max_frozen_off_the_main_thread_thaws_on_time(guest):
    """Where no signal can interrupt the snapshot, the watchdog still thaws at the deadline; the task fails when it returns."""
    box = {}

    def run():
        try:
            _consistency.consistent(lambda: time.sleep(1.5), "required", domain=guest, max_frozen=0.2)
        except ReplicationError as exc:
            box["error"] = exc
    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.8)
    assert guest.count("thaw") == 1  # thawed while the snapshot still runs
    worker.join(5)
    assert "max_frozen" in box["error"].msg and thawed(guest.real)


def test_sigterm_during_the_snapshot_thaws_and_fails_cleanly(guest, tmp_path):
    mark = tmp_path / "post-ran"

    def cancelled():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    with pytest.raises(ReplicationError, match="SIGTERM"):
        _consistency.consistent(cancelled, "required", domain=guest, pre_hook=["true"], post_hook=["touch", str(mark)])
    assert guest.count("thaw") == 1 and thawed(guest.real) and mark.exists()
    assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler or signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_during_a_hanging_freeze_thaws(guest):
    guest.hang = threading.Event()
    killer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    killer.start()
    with pytest.raises(ReplicationError, match="SIGTERM"):
        _consistency.consistent(lambda: pytest.fail("snapshot taken"), "required", domain=guest, freeze_timeout=5)
    killer.join()
    assert guest.count("thaw") == 1
    guest.hang.set()  # the late freeze is undone too
    deadline = time.monotonic() + 5
    while guest.count("thaw") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    guest.hang = None
    assert guest.count("thaw") == 2 and thawed(guest.real)


def test_failing_pre_hook_freezes_nothing_and_skips_the_post_hook(guest, tmp_path):
    mark = tmp_path / "post-ran"
    with pytest.raises(ReplicationError, match=r"pre_hook false: exit 1"):
        _consistency.consistent(lambda: pytest.fail("snapshot taken"), "required", domain=guest, pre_hook=["false"],
                                post_hook=["touch", str(mark)])
    assert guest.calls == [] and not mark.exists() and thawed(guest.real)


def test_failing_post_hook_fails_after_the_thaw(guest, tmp_path):
    dest = tmp_path / "snap.img"
    with pytest.raises(ReplicationError, match=r"post_hook sh: exit 3: flush failed"):
        _consistency.consistent(_copier(guest, dest), "required", domain=guest, post_hook=["sh", "-c", "echo flush failed >&2; exit 3"])
    assert guest.calls == [("freeze", None), ("thaw", None)] and thawed(guest.real) and _sha(dest) == _sha(guest.disk)


def test_hooks_run_without_a_shell_and_are_bounded(guest, tmp_path):
    out = tmp_path / "argv"
    _consistency.run_hook("pre_hook", [sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(out), "a; b $HOME"], 5)
    assert out.read_text() == "a; b $HOME"
    start = time.monotonic()
    with pytest.raises(ReplicationError, match=r"within 0.3 s \(hook_timeout\)"):
        _consistency.run_hook("pre_hook", ["sleep", "10"], 0.3)
    assert time.monotonic() - start < 3
    with pytest.raises(ReplicationError, match="no-such-program.*program first"):
        _consistency.run_hook("post_hook", [str(tmp_path / "no-such-program")], 5)


def test_thaw_is_retried_and_a_thaw_that_keeps_failing_says_what_to_do(guest, tmp_path, monkeypatch):
    monkeypatch.setattr(_consistency, "THAW_ATTEMPTS", 3)
    guest.thaw_failures = 2
    _unused, report = _consistency.consistent(_copier(guest, tmp_path / "s"), "required", domain=guest, thaw_retry_delay=0.01)
    assert guest.count("thaw") == 3 and report["state"] == "frozen" and thawed(guest.real)
    guest.calls.clear()
    guest.thaw_failures = 10
    with pytest.raises(ReplicationError, match="may still be frozen: run virsh domfsthaw web01"):
        _consistency.consistent(_copier(guest, tmp_path / "s2"), "required", domain=guest, thaw_retry_delay=0.01)
    assert guest.count("thaw") == 3 and not thawed(guest.real)  # still frozen, as the error says
    guest.real.fsThaw()
    assert thawed(guest.real)


def test_guest_without_agent_required_fails_crash_warns(guest, tmp_path):
    guest.freeze_error = AgentMissing("Guest agent is not responding: QEMU guest agent is not connected")
    with pytest.raises(ReplicationError, match="not connected; install and start qemu-guest-agent"):
        _consistency.consistent(lambda: pytest.fail("snapshot taken"), "required", domain=guest)
    assert guest.count("thaw") == 0
    warnings = []
    dest = tmp_path / "snap.img"
    _unused, report = _consistency.consistent(_copier(guest, dest), "crash", domain=guest, warn=warnings.append)
    assert report["state"] == "unfrozen" and _sha(dest) == _sha(guest.disk)
    assert len(warnings) == 1 and "crash-consistent only" in warnings[0]


def test_bad_mountpoint_fails_in_every_mode(guest):
    for mode in ("crash", "required"):
        with pytest.raises(ReplicationError, match="mount point not found: /nope; check freeze_mountpoints"):
            _consistency.consistent(lambda: pytest.fail("snapshot taken"), mode, domain=guest, mountpoints=["/nope"])
    assert thawed(guest.real)


def test_stopped_guest_needs_no_freeze_and_none_touches_nothing(guest, tmp_path):
    _unused, report = _consistency.consistent(_copier(guest, tmp_path / "a"), "none", domain=guest)
    assert report["state"] == "none" and guest.calls == []
    guest.real.destroy()
    _unused, report = _consistency.consistent(_copier(guest, tmp_path / "b"), "required", domain=guest)
    assert report["state"] == "shutoff" and guest.calls == []


def test_unknown_domain_and_missing_library(tmp_path, guest, monkeypatch):
    uri = guest.conn.getURI()
    with pytest.raises(ReplicationError, match="Failed to freeze guest nope: .*check the domain name"):
        _consistency.from_params(dict(consistency="required", domain="nope", libvirt_uri=uri), lambda: pytest.fail("snapshot taken"))
    with pytest.raises(ReplicationError, match="cannot connect to libvirt at test:///no/such/node.xml"):
        _consistency.from_params(dict(consistency="crash", server="web01", libvirt_uri="test:///no/such/node.xml"), lambda: 1)
    monkeypatch.setattr(_consistency, "libvirt", None)
    with pytest.raises(MissingDependency, match="pip install libvirt-python"):
        _consistency.from_params(dict(consistency="required", domain="web01", libvirt_uri=uri), lambda: 1)


def test_snapshot_module_freezes_around_the_local_snapshot(module_runner, guest, tmp_path, monkeypatch):
    """The snapshot module (provider local) with consistency: the guest's own disk, frozen through the same connection."""
    monkeypatch.setattr(_consistency, "open_domain", lambda uri, name: (NoClose(guest.conn), guest))
    sdir = tmp_path / "snaps"
    args = dict(volume=str(guest.disk), snapshot_dir=str(sdir), consistency="required", domain="web01", libvirt_uri="test:///unused",
                max_frozen=30)
    check = module_runner("snapshot", args, check_mode=True)
    assert check["changed"] is True and check["consistency"]["state"] == "none" and guest.calls == [] and not sdir.exists()
    res = module_runner("snapshot", args)
    assert_return_contract("snapshot", res, expect=["consistency"])
    assert res["consistency"]["state"] == "frozen" and res["consistency"]["frozen_filesystems"] == ["/", "/boot"]
    assert guest.calls == [("freeze", None), ("thaw", None)] and thawed(guest.real)
    assert _sha(res["snapshot"]["path"]) == _sha(guest.disk)
    guest.calls.clear()
    named = module_runner("snapshot", dict(args, name="named"))
    assert named["changed"] and named["consistency"]["state"] == "frozen" and guest.count("freeze") == 1
    again = module_runner("snapshot", dict(args, name="named"))  # idempotent: nothing to take, nothing frozen
    assert again["changed"] is False and again["consistency"]["state"] == "none" and guest.count("freeze") == 1
    guest.calls.clear()
    failed = module_runner("snapshot", dict(args, name="again", pre_hook=["sh", "-c", "exit 7"]))
    assert failed["failed"] and "pre_hook sh: exit 7" in failed["msg"] and guest.calls == []
    plain = module_runner("snapshot", dict(volume=str(guest.disk), snapshot_dir=str(tmp_path / "plain")))
    assert_return_contract("snapshot", plain, expect=["consistency"])
    assert plain["consistency"]["mode"] == "none" and guest.calls == []


def test_snapshot_module_opens_its_own_connection(module_runner, guest, tmp_path):
    """Without injection: the module connects to libvirt_uri itself (the test driver starts that guest running) and closes it."""
    res = module_runner("snapshot", dict(volume=str(guest.disk), snapshot_dir=str(tmp_path / "s"), consistency="crash",
                                         server="web01", libvirt_uri=guest.conn.getURI(), freeze_mountpoints=["/"]))
    assert_return_contract("snapshot", res, expect=["consistency"])
    assert res["consistency"]["state"] == "frozen" and res["consistency"]["frozen_filesystems"] == ["/"]
    assert res["consistency"]["domain"] == "web01" and _sha(res["snapshot"]["path"]) == _sha(guest.disk)


class NoClose:
    """The test's connection handed to the module, which closes what it opened."""

    def __init__(self, conn):
        self.conn = conn

    def close(self):
        pass
