"""Free loopback ports and waiting for a server to listen."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

# Under pytest-xdist each worker hands out ports from a slice of its own, below the kernel's ephemeral range
# (32768+): a port one worker found free and is about to give a server can never be another worker's pick, nor a
# client socket's local port. Outside xdist the kernel picks (bind to port 0).
_WORKER_PORTS = (20000, 32000)
_WORKER_SLICES = 8
_lock = threading.Lock()
_cursor = {}


def _worker_index():
    """0, 1, ... for xdist worker gw0, gw1, ...; None outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else None


def _is_free(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host="127.0.0.1"):
    """A port nobody listens on at ``host`` now, and that no other worker of this run is handed."""
    index = _worker_index()
    if index is None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return sock.getsockname()[1]
    if index >= _WORKER_SLICES:  # sharing a slice would break "no other worker is handed it"
        raise RuntimeError("pytest-xdist worker gw%d: ports are sliced for %d workers at most; run with -n %d or fewer"
                           % (index, _WORKER_SLICES, _WORKER_SLICES))
    low, high = _WORKER_PORTS
    size = (high - low) // _WORKER_SLICES
    first = low + index * size
    with _lock:
        # A random start (kept per process) so that two runs at once on this machine rarely meet; then onwards, so that
        # a port handed out is not handed out again before the whole slice has been.
        offset = _cursor.setdefault(host, random.randrange(size))
        for step in range(size):
            port = first + (offset + step) % size
            if _is_free(host, port):
                _cursor[host] = (offset + step + 1) % size
                return port
    raise RuntimeError("no free port in %d-%d on %s" % (first, first + size - 1, host))


def wait_listening(host, port, timeout=30.0, process=None):
    """Wait until ``host:port`` accepts connections; fail early if ``process`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError("server exited with %s before listening on %s:%s" % (process.returncode, host, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listening on %s:%s after %ss" % (host, port, timeout))


def stop(process, timeout=15.0):
    """Terminate a server process (and wait), killing it if it does not stop in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except Exception:  # noqa: BLE001 - any failure to stop politely ends in kill
        process.kill()
        process.wait(timeout)
