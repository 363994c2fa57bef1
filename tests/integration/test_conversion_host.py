"""The conversion_host role over real SSH (sshd on 127.0.0.2 and 127.0.0.3) through ansible-runner."""

from __future__ import annotations

import os
import stat

import pytest

from tests.peers.runner import ROOT, run_playbook

PLAYBOOK = os.path.join(ROOT, "playbooks", "conversion_host.yml")
ADDRESSES = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def hosts(sshd_factory):
    return [sshd_factory(address) for address in ADDRESSES]


def inventory(hosts, base, **extra):
    """Both hosts share this filesystem, so each gets its own work dir and venv under ``base``."""
    members = {}
    for index, host in enumerate(hosts):
        name = "conv%d" % (index + 1)
        members[name] = dict(host.inventory_vars(),
                             conversion_host_work_dir=os.path.join(base, name, "work"),
                             conversion_host_venv=os.path.join(base, name, "venv"),
                             **extra)
    return {"all": {"children": {"conversion_hosts": {"hosts": members}}}}


def changed(run):
    return {host: run.stats.get("changed", {}).get(host, 0) for host in ("conv1", "conv2")}


def assert_ok(run):
    assert run.status == "successful", run.stdout[-4000:]
    assert not run.stats.get("failures") and not run.stats.get("dark"), run.stats


@pytest.fixture(scope="module")
def prepared(hosts, tmp_path_factory):
    """One real run shared by the idempotency tests (pip installs once per host)."""
    base = str(tmp_path_factory.mktemp("conversion-host"))
    first = run_playbook(PLAYBOOK, inventory(hosts, base))
    return base, first


def test_check_mode_on_fresh_hosts_reports_changes_and_creates_nothing(hosts, tmp_path):
    base = str(tmp_path)
    run = run_playbook(PLAYBOOK, inventory(hosts, base), cmdline="--check")
    assert_ok(run)
    assert all(count > 0 for count in changed(run).values()), run.stats
    assert os.listdir(base) == []


def test_first_run_prepares_both_hosts(hosts, prepared):
    base, first = prepared
    assert_ok(first)
    assert all(count > 0 for count in changed(first).values()), first.stats
    facts = {}
    for item in first.events:
        data = item.get("event_data", {})
        if item.get("event") == "runner_on_ok" and data.get("task") == "Record where the conversion tools are":
            facts[data["host"]] = data["res"]["ansible_facts"]["conversion_host_result"]
    for index, host in enumerate(hosts):
        name = "conv%d" % (index + 1)
        work = os.path.join(base, name, "work")
        python = os.path.join(base, name, "venv", "bin", "python")
        info = os.stat(work)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == 0
        assert facts[name]["python"] == python and facts[name]["work_dir"] == work
        assert facts[name]["qemu_img_version"][:1].isdigit() and facts[name]["ibm_cos_sdk_version"][:1].isdigit()
        # the tools run on the host itself, over its own SSH
        qemu = host.run("qemu-img", "--version")
        assert qemu.returncode == 0 and qemu.stdout.startswith("qemu-img version"), qemu.stderr
        libs = host.run(python, "-c", "import ibm_boto3, Crypto.Cipher.AES; print(ibm_boto3.__file__)")
        assert libs.returncode == 0, libs.stderr
        assert libs.stdout.startswith(os.path.join(base, name, "venv"))


def test_second_run_and_check_run_change_nothing(hosts, prepared):
    base, first = prepared
    assert_ok(first)
    again = run_playbook(PLAYBOOK, inventory(hosts, base))
    assert_ok(again)
    assert changed(again) == {"conv1": 0, "conv2": 0}, again.stdout[-3000:]
    check = run_playbook(PLAYBOOK, inventory(hosts, base), cmdline="--check")
    assert_ok(check)
    assert changed(check) == {"conv1": 0, "conv2": 0}, check.stdout[-3000:]


def test_work_dir_mode_is_corrected(hosts, prepared):
    base, first = prepared
    assert_ok(first)
    work = os.path.join(base, "conv1", "work")
    os.chmod(work, 0o777)
    run = run_playbook(PLAYBOOK, inventory(hosts, base))
    assert_ok(run)
    assert changed(run) == {"conv1": 1, "conv2": 0}
    assert stat.S_IMODE(os.stat(work).st_mode) == 0o700


def test_bad_option_fails_naming_it(hosts, tmp_path):
    run = run_playbook(PLAYBOOK, inventory(hosts[:1], str(tmp_path), conversion_host_install_packages="perhaps"))
    assert run.status == "failed"
    assert "conversion_host_install_packages" in run.stdout
    assert os.listdir(str(tmp_path)) == []
