"""run_dir on a real file system: the directory, its mode, the mark of the snapshot, removal."""

from __future__ import annotations

import os
import stat


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_makes_a_private_directory_and_marks_the_snapshot_after_reading_the_old_mark(tmp_path, module_runner):
    run_dir = tmp_path / "web01-20261129-101500"
    result = module_runner("run_dir", dict(path=str(run_dir), mark="web01-20261129-101500"))
    assert result["changed"] is True and result["marked"] is None
    assert mode_of(run_dir) == 0o700
    assert (run_dir / "snapshot.owned").read_text() == "web01-20261129-101500\n"
    assert mode_of(run_dir / "snapshot.owned") == 0o600
    # The next run (resuming) reads the mark this one left, and changes nothing.
    again = module_runner("run_dir", dict(path=str(run_dir)))
    assert again["changed"] is False and again["marked"] == "web01-20261129-101500"
    assert sorted(os.listdir(run_dir)) == ["snapshot.owned"]


def test_an_existing_directory_is_made_private(tmp_path, module_runner):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    os.chmod(run_dir, 0o755)
    result = module_runner("run_dir", dict(path=str(run_dir)))
    assert result["changed"] is True and mode_of(run_dir) == 0o700


def test_check_mode_reads_the_mark_and_makes_nothing(tmp_path, module_runner):
    run_dir = tmp_path / "run"
    result = module_runner("run_dir", dict(path=str(run_dir), mark="web01"), check_mode=True)
    assert result["changed"] is True and result["marked"] is None
    assert not run_dir.exists()
    run_dir.mkdir(mode=0o700)
    (run_dir / "snapshot.owned").write_text("web01-old\n")
    result = module_runner("run_dir", dict(path=str(run_dir), state="absent"), check_mode=True)
    assert result["changed"] is True and run_dir.exists()
    assert module_runner("run_dir", dict(path=str(run_dir)), check_mode=True)["marked"] == "web01-old"


def test_absent_removes_everything_and_is_idempotent(tmp_path, module_runner):
    run_dir = tmp_path / "run"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / "image.qcow2").write_bytes(b"x" * 10)
    assert module_runner("run_dir", dict(path=str(run_dir), state="absent"))["changed"] is True
    assert not run_dir.exists()
    assert module_runner("run_dir", dict(path=str(run_dir), state="absent"))["changed"] is False


def test_a_missing_parent_fails_naming_the_work_dir(tmp_path, module_runner):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = module_runner("run_dir", dict(path=str(blocker / "run")))
    assert result["failed"] is True
    assert result["msg"].startswith("Failed to prepare the run directory %s" % (blocker / "run"))
    assert "replication_work_dir" in result["msg"]


def test_mark_with_absent_is_refused(tmp_path, module_runner):
    result = module_runner("run_dir", dict(path=str(tmp_path / "run"), state="absent", mark="x"))
    assert result["failed"] is True and "mark is for state=present" in result["msg"]


def test_result_matches_its_documentation(tmp_path, module_runner):
    from tests.contract import assert_return_contract

    result = module_runner("run_dir", dict(path=str(tmp_path / "run"), mark="m"))
    assert_return_contract("run_dir", result, expect=["path", "marked"])


def test_absent_removes_a_link_not_what_it_points_to(tmp_path, module_runner):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the run's")
    link = tmp_path / "run"
    link.symlink_to(elsewhere)
    assert module_runner("run_dir", dict(path=str(link), state="absent"))["changed"] is True
    assert not os.path.lexists(link) and (elsewhere / "keep.txt").read_text() == "not the run's"
