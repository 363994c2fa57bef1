"""Free loopback ports and waiting for a server to listen."""

from __future__ import annotations

import socket
import time


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
