"""The progress callback: its line format, and its output in a real ansible-playbook run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

from ansible_collections.vmimage.replication.plugins.callback.progress import progress_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

# Writes a progress file in four steps, as qemu_convert and cos_upload do, and finishes once the test has seen a line
# (the gate file; bounded), so that a slow start of the poller cannot make the job end before its first poll.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {collections!r})
    from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile
    progress = ProgressFile(sys.argv[1], "convert", total=4 << 20)
    for step in range(4):
        progress.update(step << 20, force=True)
        time.sleep(0.2)
    deadline = time.monotonic() + 60
    while not os.path.exists({gate!r}) and time.monotonic() < deadline:
        time.sleep(0.1)
    progress.finish()
    """
)

PLAYBOOK = textwrap.dedent(
    """
    - hosts: localhost
      gather_facts: false
      tasks:
        - name: Start a stage in the background
          ansible.builtin.command: "{python} {writer} {progress}"
          async: 60
          poll: 0
          register: job
          changed_when: false
        - name: Follow it
          vmimage.replication.job_progress:
            jid: "{{{{ job.ansible_job_id }}}}"
            progress_file: "{progress}"
            wait: 0.4
          register: polled
          until: polled.finished
          retries: 100
          delay: 0
        - name: Clean the job file
          ansible.builtin.async_status:
            jid: "{{{{ job.ansible_job_id }}}}"
            mode: cleanup
    """
)


def test_line_names_host_stage_percent_bytes_rate():
    line = progress_line("web01", {"progress": {"stage": "upload", "done": 1 << 20, "total": 4 << 20, "percent": 25.0, "rate": 1 << 20}})
    assert line == "web01 | upload: 25.0% (1.0 MiB of 4.0 MiB, 1.0 MiB/s)"


def test_no_line_without_progress():
    assert progress_line("web01", {"finished": False, "progress": {}}) is None
    assert progress_line("web01", {"changed": True}) is None


def test_prints_lines_while_a_real_job_runs(tmp_path):
    collections = os.environ["ANSIBLE_COLLECTIONS_PATH"]
    writer = tmp_path / "writer.py"
    gate = tmp_path / "gate"
    writer.write_text(WRITER.format(collections=collections, gate=str(gate)))
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK.format(python=sys.executable, writer=writer, progress=tmp_path / "p.json"))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_ASYNC_DIR=str(tmp_path / "async"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    with subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        timer = threading.Timer(120, proc.kill)  # a bound on a hang
        timer.start()
        output = []
        try:
            for line in proc.stdout:
                output.append(line)
                if line.startswith("localhost | convert: "):
                    gate.touch()
        finally:
            timer.cancel()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(output), "")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("localhost | convert: ")]
    assert lines, done.stdout
    # Lines appear while the job runs, not only at its end.
    assert any("100.0%" not in line for line in lines[:-1]), lines
    assert "100.0%" in lines[-1] and "finished" in lines[-1]
    assert os.listdir(str(tmp_path / "async")) == []
