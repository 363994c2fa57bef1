"""job_progress against real async job files and progress files."""

from __future__ import annotations

import json
import os
import threading

from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile

RUNNING = {"started": True, "finished": False, "ansible_job_id": "j1.1"}


def write_job(async_dir, jid, data):
    path = os.path.join(str(async_dir), jid)
    with open(path + ".tmp", "w") as handle:
        json.dump(data, handle)
    os.rename(path + ".tmp", path)


def test_running_job_reports_progress(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", RUNNING)
    progress = ProgressFile(str(tmp_path / "p.json"), "convert", total=4 << 20)
    progress.update(1 << 20, force=True)
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), progress_file=str(tmp_path / "p.json"), wait=0))
    assert result["changed"] is False
    assert result["finished"] is False and result["failed_job"] is False
    assert result["progress"]["stage"] == "convert"
    assert result["progress"]["percent"] == 25.0
    assert result["msg"].startswith("convert: 25.0%")


def test_running_job_without_progress_yet(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", RUNNING)
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), progress_file=str(tmp_path / "none.json"), wait=0))
    assert result["finished"] is False
    assert result["progress"] == {}
    assert "no progress reported yet" in result["msg"]


def test_finished_job(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"changed": True, "sha256": "ab" * 32})
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0))
    assert result["finished"] is True and result["failed_job"] is False
    assert result["msg"] == "job j1.1 finished"


def test_failed_job_names_the_cause(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"failed": True, "msg": "Failed to convert disk /x: no such file\nmore"})
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0))
    assert result.get("failed") is None
    assert result["finished"] is True and result["failed_job"] is True
    assert result["msg"] == "job j1.1 failed: Failed to convert disk /x: no such file"


def test_returns_as_soon_as_the_job_finishes(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", RUNNING)
    timer = threading.Timer(0.3, write_job, (tmp_path, "j1.1", {"changed": False}))
    timer.start()
    try:
        # wait is far longer than the job; the module must come back with finished=True, not time out.
        result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=120))
    finally:
        timer.cancel()
    assert result["finished"] is True


def test_half_written_job_file_counts_as_running(tmp_path, module_runner):
    (tmp_path / "j1.1").write_text("")
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0))
    assert result["finished"] is False


def test_unknown_job_fails_clearly(tmp_path, module_runner):
    result = module_runner("job_progress", dict(jid="j404.1", async_dir=str(tmp_path), wait=0))
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to find async job j404.1 in %s" % tmp_path)
    assert "async_dir" in result["msg"]


def test_async_dir_falls_back_to_environment(tmp_path, module_runner, monkeypatch):
    write_job(tmp_path, "j1.1", {"changed": False})
    monkeypatch.setenv("ANSIBLE_ASYNC_DIR", str(tmp_path))
    result = module_runner("job_progress", dict(jid="j1.1", wait=0))
    assert result["finished"] is True


def test_check_mode_gives_the_same_answer(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", RUNNING)
    args = dict(jid="j1.1", async_dir=str(tmp_path), wait=0)
    assert module_runner("job_progress", args, check_mode=True)["finished"] is False


def test_result_matches_its_documentation(tmp_path, module_runner):
    from tests.contract import assert_return_contract

    write_job(tmp_path, "j1.1", RUNNING)
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0))
    assert_return_contract("job_progress", result, expect=["jid", "finished", "failed_job", "progress"])


def test_collect_returns_the_finished_jobs_result_and_removes_its_file(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"changed": True, "sha256": "ab" * 32, "invocation": {"module_args": {"src": "/x"}}})
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0, collect=True))
    assert result["finished"] is True and result["changed"] is False
    assert result["result"] == {"changed": True, "sha256": "ab" * 32, "finished": True, "ansible_job_id": "j1.1"}
    assert not (tmp_path / "j1.1").exists()
    from tests.contract import assert_return_contract

    assert_return_contract("job_progress", result, expect=["result"])


def test_collect_of_a_failed_job_carries_its_message(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"failed": True, "msg": "Timeout exceeded"})
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0, collect=True))
    assert result["failed_job"] is True
    assert result["result"]["msg"] == "Timeout exceeded"
    assert not (tmp_path / "j1.1").exists()


def test_collect_leaves_a_running_job_alone(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", RUNNING)
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0, collect=True))
    assert result["finished"] is False and "result" not in result
    assert (tmp_path / "j1.1").exists()


def test_collect_in_check_mode_keeps_the_job_file(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"changed": False})
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0, collect=True), check_mode=True)
    assert result["result"]["finished"] is True
    assert (tmp_path / "j1.1").exists()


def test_collected_warnings_of_the_job_become_the_polls(tmp_path):
    from ansible_collections.vmimage.replication.plugins.module_utils._jobs import warning_texts

    as_written = {"warnings": ["plain text", {"event": {"msg": "as an event record"}}, {"other": 1}]}
    assert warning_texts(as_written) == ["plain text", "as an event record", '{"other": 1}']
    assert warning_texts(None) == [] and warning_texts({}) == []


def test_a_bad_bucket_heartbeat_is_refused_before_a_finished_job_is_collected(tmp_path, module_runner):
    write_job(tmp_path, "j1.1", {"changed": True})
    beat = dict(bucket="b", server="web01", token="t", protocol="conditional")
    result = module_runner("job_progress", dict(jid="j1.1", async_dir=str(tmp_path), wait=0, collect=True, bucket_heartbeat=beat))
    assert result["failed"] is True and "bucket_heartbeat needs heartbeat_file and cos" in result["msg"]
    assert (tmp_path / "j1.1").exists()  # its result can still be collected
