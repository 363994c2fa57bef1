"""Run the collection's real playbooks through ansible_runner.run() and read their events."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import sys
import tempfile

import ansible_runner

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".build", "pytest-collections")
# Collections the playbooks use beside this one (kubernetes.core), unpacked by hack/bootstrap.sh.
EXTRA_COLLECTIONS = os.path.join(ROOT, ".build", "collections-extra")
TEST_PLUGINS = os.path.join(ROOT, "tests", "peers", "ansible_plugins")
VENV_BIN = os.path.dirname(sys.executable)


@dataclasses.dataclass
class PlaybookRun:
    status: str
    rc: int
    events: list
    stdout: str
    artifact_dir: str
    stats: dict

    def task_results(self, task_name=None, event="runner_on_ok"):
        """event_data.res of every ``event`` event, optionally only for tasks named ``task_name``."""
        found = []
        for item in self.events:
            if item.get("event") != event:
                continue
            data = item.get("event_data", {})
            if task_name is None or data.get("task") == task_name:
                found.append(data.get("res", {}))
        return found

    def assert_nowhere(self, secret):
        """``secret`` is in no output, event or artifact file of the run."""
        assert secret not in self.stdout and secret not in json.dumps(self.events)
        for folder, _unused, files in os.walk(self.artifact_dir):
            for name in files:
                with open(os.path.join(folder, name), "rb") as handle:
                    assert secret.encode() not in handle.read(), os.path.join(folder, name)

    def custom_stats(self):
        for item in self.events:
            if item.get("event") == "playbook_on_stats":
                return item.get("event_data", {}).get("artifact_data", {})
        return {}


def payload_cache_env():
    """What makes an Ansible run use the session's cache of module payloads (tests/conftest.py names it), if any."""
    shared = os.environ.get("VMI_TEST_PAYLOAD_CACHE")
    if not shared:
        return {}
    return {"ANSIBLE_CALLBACK_PLUGINS": os.path.join(TEST_PLUGINS, "callback"), "VMI_TEST_PAYLOAD_CACHE": shared,
            "VMI_TEST_PAYLOAD_SOURCES": os.path.join(ROOT, "plugins")}


def run_playbook(playbook, inventory, extravars=None, envvars=None, verbosity=0, cmdline=None, private_dir=None, timeout=900,
                 cancel_callback=None, keep_command=False):
    """Run ``playbook`` (a path) with ``inventory`` (a path or dict); secrets belong in ``envvars``.

    The run uses the venv's Python and this checkout's collection. Returns a
    PlaybookRun with the status, every event and the whole stdout. ``keep_command`` keeps artifacts/<id>/command (which
    holds the environment) for a test that removes it itself, as a management application does.
    """
    # Under tempfile's dir, which tests/conftest.py points at a pytest tmp dir for the whole run.
    private_dir = private_dir or tempfile.mkdtemp(prefix="runner-")
    # ansible's own temporary files (AnsiballZ payloads, async status) stay in the private dir too:
    # the SSH peers run on this machine as this user, so one local path serves both sides.
    scratch = os.path.join(private_dir, "tmp")
    os.makedirs(scratch, mode=0o700, exist_ok=True)
    env = {
        "TMPDIR": scratch,
        "ANSIBLE_LOCAL_TEMP": os.path.join(scratch, "local"),
        "ANSIBLE_REMOTE_TMP": os.path.join(scratch, "remote"),
        "ANSIBLE_ASYNC_DIR": os.path.join(scratch, "async"),
        "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join((COLLECTIONS, EXTRA_COLLECTIONS)),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
    }
    env.update(payload_cache_env())
    env.update(envvars or {})
    try:
        return _run(private_dir, playbook, inventory, extravars, env, verbosity, cmdline, timeout, cancel_callback)
    finally:
        # ansible-runner records the environment (so the secrets of ``envvars``) in env/envvars and artifacts/<id>/command,
        # by design; a management application removes them with the run (docs/ansible-runner.md). Every other file stays,
        # so the tests that search the artifacts for a secret still see any leak.
        shutil.rmtree(os.path.join(private_dir, "env"), ignore_errors=True)
        for command in [] if keep_command else glob.glob(os.path.join(private_dir, "artifacts", "*", "command")):
            os.unlink(command)


def _run(private_dir, playbook, inventory, extravars, env, verbosity, cmdline, timeout, cancel_callback):
    result = ansible_runner.run(
        private_data_dir=private_dir,
        playbook=os.path.abspath(playbook),
        inventory=inventory if isinstance(inventory, str) and os.path.exists(inventory) else json.dumps(inventory),
        extravars=extravars or {},
        envvars=env,
        verbosity=verbosity,
        cmdline=cmdline,
        quiet=True,
        timeout=timeout,
        project_dir=ROOT,
        cancel_callback=cancel_callback,
    )
    stdout = result.stdout.read() if result.stdout else ""
    events = list(result.events)
    return PlaybookRun(result.status, result.rc, events, stdout, result.config.artifact_dir, result.stats or {})
