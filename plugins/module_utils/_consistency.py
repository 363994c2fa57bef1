# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Crash-consistent snapshots: pre hook -> freeze the guest's file systems (libvirt) -> snapshot -> thaw -> post hook.

A frozen guest is an outage, so the freeze is bounded twice: a freeze that does not
return within ``freeze_timeout`` is thawed and fails, and a watchdog thaws the guest
when the snapshot runs longer than ``max_frozen`` (even when the snapshot is stuck in
C code), then interrupts it. The thaw runs on every path: the snapshot raising, a
timeout, SIGTERM. The post hook runs on every path once the pre hook succeeded.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError, terminate_as_error

try:
    import libvirt
except ImportError:  # pragma: no cover - reported when consistency is asked for
    libvirt = None

MODES = ("none", "crash", "required")
THAW_ATTEMPTS = 3


class _Expired(Exception):
    pass


def _raise_expired(signum, frame):
    raise _Expired()


def open_domain(uri, name):
    """Return ``(connection, domain)`` for domain ``name`` at libvirt ``uri``; a clear error when either is missing."""
    if libvirt is None:
        raise MissingDependency("Failed to freeze guest %s: the Python library libvirt-python is not installed on the host that runs the task "
                                "(pip install libvirt-python; it builds with libvirt-dev and pkg-config)" % name)
    libvirt.registerErrorHandler(lambda ctx, err: None, None)  # errors come back as exceptions; keep stderr clean
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise ReplicationError("Failed to freeze guest %s: cannot connect to libvirt at %s: %s; check libvirt_uri" % (name, uri, exc)) from None
    try:
        return conn, _lookup(conn, name)
    except ReplicationError:
        conn.close()
        raise


def run_hook(which, argv, timeout):
    """Run a hook command as an argv list (no shell) bounded by ``timeout`` seconds; raise with its exit and last output."""
    what = "Failed to run the %s %s" % (which, argv[0] if argv else "")
    try:
        proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ReplicationError("%s: it did not finish within %s s (hook_timeout)" % (what, timeout), hook=which) from None
    except OSError as exc:
        raise ReplicationError("%s: %s; give the command as a list, program first" % (what, exc.strerror or exc), hook=which) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip()[-500:]
        raise ReplicationError("%s: exit %d: %s" % (what, proc.returncode, tail), hook=which, rc=proc.returncode)


class _Guest:
    """One domain's freeze state; ``thaw`` is idempotent, thread-safe and retried."""

    def __init__(self, domain, name, mountpoints, retry_delay):
        self.domain, self.name, self.mountpoints, self.retry_delay = domain, name, mountpoints, retry_delay
        self.lock = threading.Lock()
        self.frozen_at = None
        self.thawed_at = None
        self.abandoned = False  # the freeze timed out: undo it if it returns late
        self.thaw_error = None

    def freeze(self):
        self.frozen_at = time.monotonic()  # counted from the request: a slow freeze already stalls the guest
        count = self.domain.fsFreeze(self.mountpoints or None)
        with self.lock:
            if self.abandoned:  # returned after the caller gave up and thawed: thaw once more
                self.thawed_at = None
        if self.abandoned:
            self.thaw()
        return count

    def give_up(self):
        with self.lock:
            self.abandoned = True

    def thaw(self):
        with self.lock:
            if self.thawed_at is not None:
                return
            for attempt in range(THAW_ATTEMPTS):
                try:
                    self.domain.fsThaw(self.mountpoints or None)
                    self.thawed_at, self.thaw_error = time.monotonic(), None
                    return
                except Exception as exc:  # pylint: disable=broad-except  # any failure: try again, then report
                    self.thaw_error = exc
                    if attempt + 1 < THAW_ATTEMPTS:
                        time.sleep(self.retry_delay)

    def thaw_or_raise(self):
        self.thaw()
        if self.thawed_at is None and self.thaw_error is not None:
            raise ReplicationError("Failed to thaw guest %s: %s; the guest may still be frozen: run virsh domfsthaw %s now"
                                   % (self.name, self.thaw_error, self.name), domain=self.name)


def _unsupported(exc):
    """True when a freeze failed because the guest cannot freeze (no agent, no support), not because of a bad request."""
    codes = set()
    for name in ("VIR_ERR_AGENT_UNRESPONSIVE", "VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_UNSUPPORTED", "VIR_ERR_ARGUMENT_UNSUPPORTED",
                 "VIR_ERR_AGENT_COMMAND_TIMEOUT", "VIR_ERR_AGENT_UNSYNCED"):
        codes.add(getattr(libvirt, name, None))
    return libvirt is not None and isinstance(exc, libvirt.libvirtError) and exc.get_error_code() in codes


def _filesystems(domain, mountpoints):
    if mountpoints:
        return list(mountpoints)
    try:
        return [fs[0] for fs in domain.fsInfo()]
    except Exception:  # pylint: disable=broad-except  # the list is a report; the freeze count still says how many
        return None


def _freeze(guest, timeout):
    """Freeze in a thread, waiting at most ``timeout`` seconds; return ``(count, None)`` or ``(None, libvirt's error)``."""
    box = {}

    def target():
        try:
            box["count"] = guest.freeze()
        except Exception as exc:  # pylint: disable=broad-except  # handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, name="fsfreeze", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise ReplicationError("Failed to freeze guest %s: the freeze did not return within %s s (freeze_timeout); the guest was thawed"
                               % (guest.name, timeout), domain=guest.name)
    return box.get("count"), box.get("error")


def _run_bounded(guest, snapshot, max_frozen):
    """Call ``snapshot()``; at ``max_frozen`` s a watchdog thaws the guest and interrupts the call (main thread only)."""
    expired = threading.Event()
    lock = threading.Lock()
    state = dict(done=False)
    main = threading.current_thread() is threading.main_thread()
    main_id = threading.get_ident()

    def deadline():
        expired.set()
        guest.thaw()
        with lock:
            if main and not state["done"]:
                signal.pthread_kill(main_id, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, _raise_expired) if main else None
    timer = threading.Timer(max_frozen, deadline)
    timer.daemon = True
    timer.start()
    try:
        state["result"] = snapshot()
        with lock:
            state["done"] = True
    except _Expired:
        pass
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
        if main:
            signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
    if expired.is_set():
        raise ReplicationError("Failed to take a consistent snapshot of guest %s: the snapshot took longer than %s s (max_frozen) with the "
                               "guest frozen; the guest was thawed" % (guest.name, max_frozen), domain=guest.name, snapshot=state.get("result"))
    return state["result"]


def consistent(snapshot, consistency="none", domain=None, domain_name=None, mountpoints=None, freeze_timeout=30.0, max_frozen=60.0,
               pre_hook=None, post_hook=None, hook_timeout=300.0, warn=None, thaw_retry_delay=0.5):
    """Return ``(snapshot(), report)`` with the guest's file systems frozen around the call as ``consistency`` asks.

    ``domain`` is a libvirt domain object (the caller owns its connection). ``report`` has ``mode``, ``domain``,
    ``state`` (V(frozen), V(shutoff), V(unfrozen) or V(none)), ``frozen_filesystems`` and ``frozen_seconds``.
    """
    if consistency not in MODES:
        raise ReplicationError("Failed to take the snapshot: consistency must be one of %s, not %s" % (", ".join(MODES), consistency))
    warn = warn or (lambda msg: None)
    name = domain_name or (domain.name() if domain is not None else None)
    report = dict(mode=consistency, domain=name, state="none", frozen_filesystems=[], frozen_count=0, frozen_seconds=0.0)
    try:
        with terminate_as_error("take a consistent snapshot of guest %s" % name):
            if pre_hook:
                run_hook("pre_hook", pre_hook, hook_timeout)
            try:
                result = _frozen(snapshot, consistency, domain, name, mountpoints, freeze_timeout, max_frozen, warn, thaw_retry_delay, report)
            except BaseException:
                if post_hook:  # the snapshot's error is the one to report; the hook's failure is a warning
                    try:
                        run_hook("post_hook", post_hook, hook_timeout)
                    except ReplicationError as exc:
                        warn(exc.msg)
                raise
            if post_hook:
                run_hook("post_hook", post_hook, hook_timeout)
    except ReplicationError as exc:
        exc.details.setdefault("consistency", report)
        raise
    return result, report


def _frozen(snapshot, consistency, domain, name, mountpoints, freeze_timeout, max_frozen, warn, retry_delay, report):
    if consistency == "none":
        return snapshot()
    if domain is None:
        raise ReplicationError("Failed to take a %s-consistent snapshot: no domain given; set domain (and libvirt_uri)" % consistency)
    if not domain.isActive():
        report["state"] = "shutoff"  # a stopped guest's disks are consistent as they are
        return snapshot()
    guest = _Guest(domain, name, mountpoints, retry_delay)
    filesystems = _filesystems(domain, mountpoints)
    try:
        count, error = _freeze(guest, freeze_timeout)
        if error is not None:
            guest.thawed_at = guest.frozen_at = None  # nothing was frozen: nothing to thaw
            guest.give_up()
            unsupported = _unsupported(error)
            if consistency == "required" or not unsupported:
                hint = "install and start qemu-guest-agent in the guest, or use consistency=crash" if unsupported else \
                    "check freeze_mountpoints and that the guest is running"
                raise ReplicationError("Failed to freeze guest %s: %s; %s" % (name, error, hint), domain=name)
            warn("guest %s could not be frozen (%s); the snapshot is crash-consistent only" % (name, error))
            report["state"] = "unfrozen"
            return snapshot()
        report.update(state="frozen", frozen_count=count, frozen_filesystems=filesystems or [])
        return _run_bounded(guest, snapshot, max_frozen)
    finally:
        if not guest.abandoned or guest.frozen_at is not None:
            guest.give_up()
            guest.thaw_or_raise()
        if guest.frozen_at is not None:
            report["frozen_seconds"] = round((guest.thawed_at or time.monotonic()) - guest.frozen_at, 3)


def from_params(p, create, check_mode=False, warn=None, connection=None, exists=None):
    """Run ``create()`` as the snapshot module's consistency options ask; return ``(result, report)``.

    ``connection`` is an open libvirt connection to use instead of opening ``libvirt_uri`` (kept open).
    ``exists()`` says whether the snapshot is there already: then nothing is frozen (an idempotent re-run).
    """
    mode = p.get("consistency") or "none"
    name = p.get("domain") or p.get("server")
    if mode == "none" or check_mode or (exists is not None and exists()):
        return create(), dict(mode=mode, domain=name if mode != "none" else None, state="none", frozen_filesystems=[], frozen_count=0,
                              frozen_seconds=0.0)
    if not name:
        raise ReplicationError("Failed to take a %s-consistent snapshot: set domain (the libvirt domain of the server) or server" % mode)
    if connection is not None:
        conn, domain, own = connection, _lookup(connection, name), False
    else:
        (conn, domain), own = open_domain(p.get("libvirt_uri") or "qemu:///system", name), True
    try:
        return consistent(create, mode, domain=domain, domain_name=name, mountpoints=p.get("freeze_mountpoints"),
                          freeze_timeout=p.get("freeze_timeout") or 30.0, max_frozen=p.get("max_frozen") or 60.0,
                          pre_hook=p.get("pre_hook"), post_hook=p.get("post_hook"), hook_timeout=p.get("hook_timeout") or 300.0, warn=warn)
    finally:
        if own:
            conn.close()


def _lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except Exception as exc:  # pylint: disable=broad-except  # libvirt's error, one clear line
        raise ReplicationError("Failed to freeze guest %s: %s; check the domain name (virsh list --all)" % (name, exc), domain=name) from None
