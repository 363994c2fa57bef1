"""Helpers for the end-to-end replication tests: sample disks, an inventory, runs, and what a run left behind."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid

from tests.peers.runner import ROOT, run_playbook

PLAYBOOK = os.path.join(ROOT, "playbooks", "replicate.yml")
CLEANUP = os.path.join(ROOT, "playbooks", "cleanup.yml")
SAMPLE_DISK = os.path.join(ROOT, "hack", "sample_disk.py")


def build_disk(path, size="96M", fill=0.5):
    subprocess.run([sys.executable, SAMPLE_DISK, path, "--size", size, "--fill", str(fill)], check=True, stdout=subprocess.DEVNULL)
    return path


def change_disk(path):
    subprocess.run([sys.executable, SAMPLE_DISK, path, "--change"], check=True, stdout=subprocess.DEVNULL)


def copy_disk(template, path):
    subprocess.run(["cp", "--sparse=always", template, path], check=True)
    return path


@dataclasses.dataclass
class Site:
    """One replication setup: disks, work and snapshot dirs, a bucket, the keys in a 0600 file."""

    root: str
    s3: object
    bucket: str
    disks: dict
    keep_last: int = 7
    # A poll returns as soon as its stage ends: a longer one only means fewer module runs (each about 0.5 s of CPU)
    # while a stage runs. Tests that want progress records while a stage runs, or a quick heartbeat, ask for less.
    poll_wait: float = 3.0
    extra: dict = dataclasses.field(default_factory=dict)
    # Variables of single servers (host vars), over the group's.
    host_vars: dict = dataclasses.field(default_factory=dict)

    @property
    def work_dir(self):
        return os.path.join(self.root, "work")

    @property
    def snapshot_dir(self):
        return os.path.join(self.root, "snapshots")

    @property
    def async_dir(self):
        return os.path.join(self.root, "async")

    @property
    def cos_file(self):
        return os.path.join(self.root, "secret", "cos.json")

    def write_cos_file(self):
        os.makedirs(os.path.dirname(self.cos_file), mode=0o700, exist_ok=True)
        fd = os.open(self.cos_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as handle:
            json.dump(dict(access_key_id=self.s3.access_key_id, secret_access_key=self.s3.secret_access_key), handle)

    def inventory(self, **extra_vars):
        hosts = {name: dict({"replication_volume": path}, **self.host_vars.get(name, {})) for name, path in self.disks.items()}
        group_vars = dict(
            replication_conversion_host="localhost",
            replication_snapshot_dir=self.snapshot_dir,
            replication_work_dir=self.work_dir,
            replication_bucket=self.bucket,
            replication_prefix="images/",
            replication_keep_last=self.keep_last,
            replication_poll_wait=self.poll_wait,
            # Endpoint and region here; the keys come from a 0600 file (never the environment, see docs/running.md).
            replication_cos=dict(endpoint=self.s3.endpoint, region=self.s3.region),
            replication_cos_file=self.cos_file,
        )
        group_vars.update(self.extra)
        group_vars.update(extra_vars)
        return {"servers": {"hosts": hosts, "vars": group_vars}}

    def run(self, check=False, verbosity=0, extravars=None, cancel_callback=None, **extra_vars):
        return self.run_playbook(PLAYBOOK, check=check, verbosity=verbosity, extravars=extravars, cancel_callback=cancel_callback, **extra_vars)

    def run_playbook(self, playbook, check=False, verbosity=0, extravars=None, cancel_callback=None, **extra_vars):
        self.write_cos_file()
        private_dir = os.path.join(self.root, "runner-%s" % uuid.uuid4().hex[:8])
        os.makedirs(private_dir)
        try:
            return run_playbook(
                playbook,
                self.inventory(**extra_vars),
                extravars=extravars,
                envvars={"ANSIBLE_ASYNC_DIR": self.async_dir},
                verbosity=verbosity,
                cmdline="--check" if check else None,
                private_dir=private_dir,
                cancel_callback=cancel_callback,
            )
        finally:
            os.unlink(self.cos_file)

    def objects(self):
        client = self.s3.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["ETag"]
        return found

    def multipart_uploads(self):
        from ibm_botocore.exceptions import ClientError

        try:
            return self.s3.client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":  # rclone's answer when there are none
                return []
            raise

    def leftovers(self):
        """Temporary things a finished run must not leave: work files, snapshots, async job files, uploads."""
        left = {}
        for name, path in (("work", self.work_dir), ("snapshots", self.snapshot_dir), ("async", self.async_dir)):
            if os.path.isdir(path):
                entries = sorted(os.listdir(path))
                if entries:
                    left[name] = entries
        uploads = self.multipart_uploads()
        if uploads:
            left["uploads"] = [u["Key"] for u in uploads]
        orphans = self.orphans()
        if orphans:
            left["orphans"] = orphans
        return left

    def catalog(self, server, prefix="images/"):
        """The parsed catalog.json of ``server`` (None when there is none, the raw text when it is not JSON)."""
        from ibm_botocore.exceptions import ClientError

        try:
            body = self.s3.client().get_object(Bucket=self.bucket, Key="%s%s/catalog.json" % (prefix, server))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", "replace")

    def orphans(self, prefix="images/"):
        """Objects under a server's prefix that its catalog does not list (the catalog itself aside): leaked uploads."""
        objects = sorted(self.objects())
        found = []
        for server in self.disks:
            folder = "%s%s/" % (prefix, server)
            mine = [key for key in objects if key.startswith(folder) and key != folder + "catalog.json"]
            if not mine:
                continue
            catalog = self.catalog(server, prefix)
            listed = set(e.get("key") for e in catalog.get("images", [])) if isinstance(catalog, dict) else set()
            found.extend(key for key in mine if key not in listed)
        return found

    def download(self, key, path):
        """Plain GET of the object: the test checks the content itself (sha256, qemu-img compare).

        rclone answers a multipart object's GET with a whole-object CRC that does not match the data
        (a quirk of the server), so the client's own checksum validation is left to when_required.
        """
        import ibm_boto3
        from ibm_botocore.client import Config

        client = ibm_boto3.client(
            "s3", endpoint_url=self.s3.endpoint, aws_access_key_id=self.s3.access_key_id,
            aws_secret_access_key=self.s3.secret_access_key, region_name=self.s3.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, response_checksum_validation="when_required"),
        )
        body = client.get_object(Bucket=self.bucket, Key=key)["Body"]
        with open(path, "wb") as handle:
            for block in iter(lambda: body.read(1 << 20), b""):
                handle.write(block)
        return path


def make_site(tmp_path, s3, templates, names, **kwargs):
    root = str(tmp_path)
    disks = {}
    os.makedirs(os.path.join(root, "disks"), exist_ok=True)
    for index, name in enumerate(names):
        disks[name] = copy_disk(templates[index % len(templates)], os.path.join(root, "disks", "%s.img" % name))
    bucket = s3.make_bucket("r-%s" % uuid.uuid4().hex[:16])
    return Site(root, s3, bucket, disks, **kwargs)


def changed_count(run):
    return sum((run.stats.get("changed") or {}).values())


def summary(run):
    return run.custom_stats().get("vmimage_replication", {})


def qemu_compare(source, image):
    """qemu-img compare (content, not allocation) of a raw source disk and a QCOW2 image."""
    return subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", source, image], capture_output=True, text=True, check=False)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
