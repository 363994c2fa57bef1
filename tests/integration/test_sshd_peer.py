"""The sshd test hosts themselves: key login works, passwords are refused, stop leaves nothing."""

from __future__ import annotations

import os
import subprocess
import time

from tests.peers import sshd


def test_root_login_by_key(sshd_host):
    result = sshd_host.run("id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert sshd_host.host == "127.0.0.2" and sshd_host.user == "root"


def test_password_and_keyboard_interactive_refused(sshd_host):
    result = sshd_host.run("true", options=("-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
                                            "-o", "PreferredAuthentications=password,keyboard-interactive"))
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_wrong_key_refused(sshd_host, tmp_path):
    other = str(tmp_path / "other")
    sshd._keygen(other)
    argv = sshd_host.ssh_command("true", options=("-o", "BatchMode=yes"))
    argv[argv.index(sshd_host.key)] = other
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_two_hosts_are_separate_addresses(sshd_factory):
    first, second = sshd_factory("127.0.0.2"), sshd_factory("127.0.0.3")
    assert (first.host, second.host) == ("127.0.0.2", "127.0.0.3")
    assert first.root != second.root and first.key != second.key
    assert second.run("true").returncode == 0
    vars_ = second.inventory_vars()
    assert vars_["ansible_host"] == "127.0.0.3" and vars_["ansible_port"] == second.port
    assert os.access(vars_["ansible_python_interpreter"], os.X_OK)


def _comm(pid):
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def test_stop_ends_listener_and_open_sessions(tmp_path):
    server = sshd.start(str(tmp_path / "h"), host="127.0.0.4")
    session = subprocess.Popen(server.ssh_command("sleep", "300"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the per-connection sshd child exists once the remote sleep runs
        for _attempt in range(400):  # until the remote "sleep" runs under the connection's sshd
            if "sleep" in [_comm(pid) for pid in sshd._descendants(server.process.pid)] or session.poll() is not None:
                break
            time.sleep(0.05)
        children = sshd._descendants(server.process.pid)
        assert children
        server.stop()
        assert server.process.poll() is not None
        assert not [pid for pid in children if sshd._running(pid)]
        assert not os.path.exists(os.path.join(server.root, "sshd.pid"))
        assert session.wait(15) == 255  # the client saw its connection close
        server.stop()  # idempotent
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        server.stop()
