"""The end-of-session check that /tmp gained nothing: pure logic on directory listings."""

from __future__ import annotations

from tests import leftovers


def test_new_matching_entries_are_leftovers():
    before = {"/tmp": {"pytest-of-root", "runner-old", "bootstrap.log"}}
    after = {"/tmp": {"pytest-of-root", "runner-old", "bootstrap.log", "runner-abc123", "weed.INFO",
                      "seaweedfs-s3-41213.sock", "ansible_vmimage.replication.image_upload_payload_x", "tmpq1w2e3r4"}}
    assert leftovers.leftovers(before, after) == [
        "/tmp/ansible_vmimage.replication.image_upload_payload_x", "/tmp/runner-abc123",
        "/tmp/seaweedfs-s3-41213.sock", "/tmp/tmpq1w2e3r4", "/tmp/weed.INFO"]


def test_entries_there_before_or_of_other_names_are_not_leftovers():
    before = {"/tmp": {"runner-old", "weed.ERROR"}}
    after = {"/tmp": {"runner-old", "weed.ERROR", "notes.txt", "pytest-of-root"}, "/var/tmp/x": set()}
    assert leftovers.leftovers(before, after) == []


def test_snapshot_of_a_missing_directory_is_empty(tmp_path):
    (tmp_path / "runner-1").mkdir()
    listing = leftovers.snapshot([str(tmp_path), str(tmp_path / "missing")])
    assert listing == {str(tmp_path): {"runner-1"}, str(tmp_path / "missing"): set()}


def test_failure_message_names_every_leftover_and_what_to_do():
    text = leftovers.failure_message(["/tmp/runner-abc", "/tmp/weed.INFO"])
    assert text.startswith("FAILED") and "/tmp/runner-abc, /tmp/weed.INFO" in text and "pytest's tmp dirs" in text
