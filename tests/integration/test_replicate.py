"""playbooks/replicate.yml end to end, through ansible-runner, against real S3 servers, qemu-img and sample disks."""

from __future__ import annotations

import json
import os
import re
import struct
import threading

import pytest

from tests.harness import run_module
from ansible_collections.vmimage.replication.plugins.module_utils import _files
from tests.integration.replication import CLEANUP, build_disk, change_disk, changed_count, make_site, qemu_compare, summary
from tests.peers.runner import run_playbook

JOB_PROGRESS = "vmimage.replication.job_progress"


@pytest.fixture(scope="session")
def disk_templates(tmp_path_factory):
    """Two different small real ext4 disks, built once; each test works on copies."""
    base = tmp_path_factory.mktemp("disks")
    first = build_disk(str(base / "a.img"), size="96M", fill=0.5)
    second = build_disk(str(base / "b.img"), size="64M", fill=0.3)
    change_disk(second)
    return [first, second]


@pytest.fixture(scope="session")
def big_disk(tmp_path_factory):
    """A larger disk whose conversion and upload last several progress polls."""
    return build_disk(str(tmp_path_factory.mktemp("big") / "big.img"), size="224M", fill=0.6)


def ordered(run):
    return sorted(run.events, key=lambda item: item.get("counter", 0))


def stage_progress(run, host, stage):
    """Percents seen in runner_retry events of ``host``'s ``stage`` before its final job_progress result."""
    percents, final = [], None
    for item in ordered(run):
        data = item.get("event_data", {})
        if data.get("host") != host or data.get("task_action") != JOB_PROGRESS:
            continue
        progress = (data.get("res") or {}).get("progress") or {}
        if progress.get("stage") != stage:
            continue
        if item["event"] == "runner_retry" and final is None and progress.get("percent") is not None:
            percents.append(progress["percent"])
        elif item["event"] == "runner_on_ok":
            final = progress
    return percents, final


STAGES = {"stream": ("stream",), "staged": ("convert", "upload")}


# Each data path end to end on one S3 server, each server once: what differs between the servers (multipart, listing,
# conditional writes) is tested on both by the upload, resume, lock and cancel tests; both runs cost a playbook each.
@pytest.mark.parametrize("s3_server, data_path", [("seaweedfs", "stream"), ("rclone", "staged")], indirect=["s3_server"])
def test_replicate_two_servers(tmp_path, s3_server, disk_templates, big_disk, data_path):
    # Short polls, one conversion coroutine or thread with Python's zlib, and small parts, so that the stages
    # last several polls and report progress while they run (each poll returns at once when its stage ends).
    site = make_site(tmp_path, s3_server, [big_disk, disk_templates[1]], ["web01", "db01"], poll_wait=0.3,
                     extra=dict(replication_coroutines=1, replication_threads=1, replication_deflate_library="zlib",
                                replication_part_size_mb=5, replication_concurrency=1, replication_data_path=data_path))

    # Check mode first: says what would happen, creates nothing, uses no async job.
    run = site.run(check=True)
    assert run.status == "successful", run.stdout
    assert {name: r["status"] for name, r in summary(run).items()} == {"web01": "would-replicate", "db01": "would-replicate"}
    assert site.objects() == {}
    assert site.leftovers() == {}

    run = site.run()
    assert run.status == "successful", run.stdout
    results = summary(run)
    assert sorted(results) == ["db01", "web01"]
    for name, disk in site.disks.items():
        result = results[name]
        assert result["status"] == "replicated", result
        assert result["error"] is None
        assert re.match(r"^images/%s/%s-\d{8}-\d{6}\.qcow2$" % (name, name), result["key"]), result["key"]
        assert result["image"] == result["latest"] == os.path.basename(result["key"])[: -len(".qcow2")]
        assert result["virtual_size"] == os.path.getsize(disk)
        assert 0 < result["stored_size"] < result["virtual_size"]
        assert result["compression_ratio"] > 1
        # The object is the disk: download it and compare the content with the source.
        image = site.download(result["key"], str(tmp_path / ("%s.qcow2" % name)))
        assert _files.sha256_file(image) == result["sha256"]
        compared = qemu_compare(disk, image)
        assert compared.returncode == 0, compared.stdout + compared.stderr
        meta = {k.lower(): v for k, v in s3_server.client().head_object(Bucket=site.bucket, Key=result["key"])["Metadata"].items()}
        assert meta["created-by"] == "vmimage.replication"
        assert meta["source-server"] == name
        assert meta["sha256"] == result["sha256"]
        assert meta["format"] == "qcow2"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", meta["snapshot-time"])
        # The operator sees the summary line of each server.
        assert re.search(r"%s: replicated %s" % (name, result["image"]), run.stdout), run.stdout

    # Progress: lines in the output, and ansible-runner events with percent < 100 before the stage ended.
    for stage in STAGES[data_path]:
        assert re.search(r"^(web01|db01) \| %s: \d+\.\d%% \(" % stage, run.stdout, re.M), run.stdout
    seen_running = False
    for name in site.disks:
        for stage in STAGES[data_path]:
            percents, final = stage_progress(run, name, stage)
            assert final and final["state"] == "finished" and final["percent"] == 100.0, (name, stage, final)
            seen_running = seen_running or any(p < 100 for p in percents)
    # The staged path's stages can end before the first poll on a loaded machine (seen once in a parallel run, staged
    # on rclone: only the final records); the stream path, slowed above, must show a stage while it ran.
    assert seen_running or data_path == "staged", "no progress record below 100% was seen while a stage ran"

    # Nothing temporary is left: work files, snapshots, async job files, multipart uploads.
    assert site.leftovers() == {}

    # Unchanged re-run: changes nothing, uploads nothing.
    objects = site.objects()
    run = site.run()
    assert run.status == "successful", run.stdout
    assert changed_count(run) == 0, run.stats
    assert {name: r["status"] for name, r in summary(run).items()} == {"web01": "unchanged", "db01": "unchanged"}
    assert site.objects() == objects
    assert "unchanged" in run.stdout

    # Check mode on the unchanged servers agrees.
    run = site.run(check=True)
    assert run.status == "successful", run.stdout
    assert changed_count(run) == 0, run.stats
    assert site.leftovers() == {}


@pytest.mark.parametrize("s3_server", ["seaweedfs"], indirect=True)
def test_rotation_and_retention(tmp_path, s3_server, disk_templates, module_runner):
    # Three turns with keep_last=2: the second rotates without pruning, the third rotates and prunes the first.
    site = make_site(tmp_path, s3_server, disk_templates[1:], ["app01"], keep_last=2)
    disk = site.disks["app01"]
    names = []
    for turn in range(3):
        if turn:
            change_disk(disk)
        if turn == 2:
            # Check mode says what the import would rotate and prune, and changes nothing.
            objects = site.objects()
            check = summary(site.run(check=True))["app01"]
            assert check["status"] == "would-replicate" and check["latest"] == check["image"] != names[-1], check
            assert check["previous_latest"] == names[-1]
            assert check["pruned"] == names[:1]
            assert site.objects() == objects
        run = site.run()
        assert run.status == "successful", run.stdout
        result = summary(run)["app01"]
        assert result["status"] == "replicated", result
        if turn:
            # The previous latest keeps its snapshot-time name; only images past keep_last=2 go.
            assert result["previous_latest"] == names[-1]
            assert result["pruned"] == (names[:1] if turn == 2 else [])
        names.append(result["image"])
        assert site.leftovers() == {}
    assert len(set(names)) == 3
    library = module_runner("image_info", dict(cos=s3_server.cos(), bucket=site.bucket, prefix="images/", server="app01"))
    assert not library.get("failed"), library
    assert [image["name"] for image in library["images"]] == names[-2:]
    assert library["latest"]["name"] == names[-1]
    keys = site.objects()
    assert not [key for key in keys if names[0] in key], keys


def test_broken_server_fails_alone(tmp_path, s3_rclone, disk_templates):
    site = make_site(tmp_path, s3_rclone, disk_templates, ["web01"])
    missing = os.path.join(site.root, "disks", "gone.img")
    site.disks["broken01"] = missing
    # A damaged qcow2: the snapshot copies it, the conversion (an async job) fails on it.
    corrupt = os.path.join(site.root, "disks", "corrupt.img")
    with open(corrupt, "wb") as handle:
        handle.write(b"QFI\xfb" + struct.pack(">I", 3) + b"\xff" * 64 + b"\0" * (1 << 20))
    site.disks["corrupt01"] = corrupt
    # A server whose inventory names no bucket (replication_mode image needs one): it fails first, having made nothing.
    site.disks["nobucket01"] = site.disks["web01"]
    site.host_vars["nobucket01"] = dict(replication_bucket="")
    run = site.run()
    assert run.status == "failed"
    results = summary(run)
    assert results["nobucket01"]["status"] == "failed"
    assert results["nobucket01"]["error"].startswith("replication_bucket is not set: replication_mode image"), results["nobucket01"]
    assert not [name for name in os.listdir(site.work_dir) if name.startswith("nobucket01")]
    assert not [name for name in os.listdir(site.snapshot_dir) if name.startswith("nobucket01")]
    assert results["web01"]["status"] == "replicated"
    assert results["broken01"]["status"] == "failed"
    assert missing in results["broken01"]["error"], results["broken01"]
    assert results["corrupt01"]["status"] == "failed"
    assert results["corrupt01"]["error"].startswith("Failed to "), results["corrupt01"]
    assert "corrupt01" in (run.stats.get("failures") or {})
    assert "broken01" in (run.stats.get("failures") or {}) and "nobucket01" in (run.stats.get("failures") or {})
    assert "web01" not in (run.stats.get("failures") or {})
    assert re.search(r"broken01: FAILED: .*%s" % re.escape(missing), run.stdout), run.stdout
    assert site.leftovers() == {}
    assert [key for key in site.objects() if key.endswith(".qcow2")] == [results["web01"]["key"]]


class Sampler:
    """Samples every process's command line and the small files under some directories while a run goes on."""

    def __init__(self, directories):
        self.directories = directories
        self.texts = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def sample(self):
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        self.texts.add(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
                except OSError:
                    pass
        for top in self.directories:
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    path = os.path.join(dirpath, name)
                    try:
                        if os.path.getsize(path) < (1 << 20):
                            with open(path, "rb") as handle:
                                self.texts.add(handle.read().decode("utf-8", "replace"))
                    except OSError:
                        pass


def read_tree(top):
    texts = {}
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as handle:
                texts[path] = handle.read().decode("utf-8", "replace")
    return texts


def test_secret_never_leaks(tmp_path, s3_server, disk_templates):
    site = make_site(tmp_path, s3_server, disk_templates, ["web01", "db01"])
    secret = s3_server.secret_access_key
    home_async = os.path.expanduser("~/.ansible_async")
    with Sampler([site.work_dir, site.async_dir, site.snapshot_dir, home_async]) as sampler:
        run = site.run(verbosity=3)
    assert run.status == "successful", run.stdout[-5000:]
    # The sampler did see the run: module processes and the progress files written while stages ran.
    assert any("ansible" in text and "AnsiballZ" in text for text in sampler.texts)
    assert any('"stage": "stream"' in text for text in sampler.texts)
    assert "AnsiballZ_image_upload" in run.stdout
    assert secret not in run.stdout
    for item in run.events:
        assert secret not in json.dumps(item), item.get("event")
    for path, text in read_tree(run.artifact_dir).items():
        assert secret not in text, path
    leaked = [text[:200] for text in sampler.texts if secret in text]
    assert not leaked, leaked
    assert site.leftovers() == {}


def test_runner_records_its_environment(tmp_path):
    """Why docs/running.md says: never pass keys in ansible-runner envvars (it writes them to artifacts/*/command)."""
    playbook = tmp_path / "noop.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
    canary = "canary-%s" % os.getpid()
    (tmp_path / "pd").mkdir()
    run = run_playbook(str(playbook), {"all": {"hosts": {}}}, envvars={"VMIMAGE_CANARY": canary}, private_dir=str(tmp_path / "pd"),
                       keep_command=True)
    assert run.status == "successful", run.stdout
    assert any(canary in text for text in read_tree(run.artifact_dir).values())


def module_snapshot(site):
    result = run_module("snapshot", dict(provider="local", volume=site.disks["web01"], server="web01", snapshot_dir=site.snapshot_dir))
    assert not result.get("failed"), result
    return result["snapshot"]


def test_cleanup_playbook_removes_leftovers(tmp_path, s3_rclone, disk_templates):
    """What a hard kill leaves (an open multipart upload, a run directory, a snapshot) goes with cleanup.yml."""
    site = make_site(tmp_path, s3_rclone, disk_templates[1:], ["web01"])
    client = s3_rclone.client()
    key = "images/web01/web01-20260101-000000.qcow2"
    client.create_multipart_upload(Bucket=site.bucket, Key=key, Metadata={"created-by": "vmimage.replication"})
    other = client.create_multipart_upload(Bucket=site.bucket, Key="elsewhere/file.bin")
    run_dir = os.path.join(site.work_dir, "web01-20260101-000000")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "web01-20260101-000000.qcow2.partial"), "wb") as handle:
        handle.write(b"\0" * 4096)
    snapshot = module_snapshot(site)
    assert os.listdir(site.snapshot_dir)

    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": 0})
    assert run.status == "successful", run.stdout
    assert not os.path.exists(run_dir)
    assert not [name for name in os.listdir(site.snapshot_dir) if snapshot["name"] in name]
    assert [upload["Key"] for upload in site.multipart_uploads()] == ["elsewhere/file.bin"]
    client.abort_multipart_upload(Bucket=site.bucket, Key="elsewhere/file.bin", UploadId=other["UploadId"])


def listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_operator_snapshot_survives_and_failed_import_leaves_no_object(tmp_path, s3_rclone, disk_templates):
    """A snapshot the role did not take is never removed (by the run or by cleanup.yml); an upload whose import fails is deleted."""
    site = make_site(tmp_path, s3_rclone, disk_templates[1:], ["web01"])
    # The operator's own snapshot of the volume as it is: the role's snapshot step answers with it (no new copy).
    operator = run_module("snapshot", dict(provider="local", volume=site.disks["web01"], server="web01", snapshot_dir=site.snapshot_dir,
                                           name="web01-before-upgrade"))
    assert not operator.get("failed"), operator
    kept = listing(site.snapshot_dir)
    assert any("web01-before-upgrade" in name for name in kept), kept
    # The image this run will make is named after that snapshot's time. A catalog whose latest has the
    # same name under another key makes image_import fail after the upload finished.
    stamp = operator["snapshot"]["created"]
    name = "web01-" + stamp.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
    previous_key = "images/web01/%s.raw" % name
    client = s3_rclone.client()
    client.put_object(Bucket=site.bucket, Key=previous_key, Body=b"\0" * 1024, Metadata={"created-by": "vmimage.replication"})
    catalog = {"format_version": 1, "created-by": "vmimage.replication", "server": "web01", "latest": name,
               "images": [{"name": name, "key": previous_key, "sha256": "0" * 64, "snapshot_time": stamp, "size": 1024,
                           "format": "raw", "source_fingerprint": None}]}
    client.put_object(Bucket=site.bucket, Key="images/web01/catalog.json", Body=json.dumps(catalog).encode())

    run = site.run()
    assert run.status == "failed", run.stdout
    result = summary(run)["web01"]
    assert result["status"] == "failed"
    assert "same snapshot time" in result["error"], result
    # The upload of the failed import is gone, the previous latest untouched, the operator's snapshot kept.
    assert sorted(site.objects()) == sorted([previous_key, "images/web01/catalog.json"])
    assert site.catalog("web01") == catalog
    assert site.leftovers() == {"snapshots": kept}, site.leftovers()

    # cleanup.yml removes only what the role names <server>-YYYYMMDD-HHMMSS.
    stale = run_module("snapshot", dict(provider="local", volume=site.disks["web01"], server="web01", snapshot_dir=site.snapshot_dir,
                                        name="web01-20200101-000000"))
    assert not stale.get("failed"), stale
    run = site.run_playbook(CLEANUP, extravars={"replication_cleanup_older_than": 0})
    assert run.status == "successful", run.stdout
    assert listing(site.snapshot_dir) == kept

    # With the clash gone, the run succeeds on the operator's snapshot and still leaves it in place.
    client.delete_object(Bucket=site.bucket, Key="images/web01/catalog.json")
    client.delete_object(Bucket=site.bucket, Key=previous_key)
    run = site.run()
    assert run.status == "successful", run.stdout
    assert summary(run)["web01"]["image"] == name
    assert site.leftovers() == {"snapshots": kept}, site.leftovers()


def test_stage_timeout_names_the_option(tmp_path, s3_rclone, big_disk):
    site = make_site(tmp_path, s3_rclone, [big_disk], ["web01"], poll_wait=0.3, extra=dict(replication_coroutines=1))
    run = site.run(replication_stage_timeout=1)
    assert run.status == "failed", run.stdout
    error = summary(run)["web01"]["error"]
    assert error == "Failed to convert and upload web01: exceeded replication_stage_timeout=1s; raise replication_stage_timeout", error
    assert site.leftovers() == {}
