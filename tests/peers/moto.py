"""moto server: EC2 (EBS volumes, snapshots, cross-region copy, tags), S3 and KMS on a free loopback port.

``SlowCopies`` is a small HTTP front for it that answers DescribeSnapshots with
``pending`` for the first N looks at each snapshot copy, because moto completes a
copy the moment it is asked for one; every other request goes through unchanged.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import os
import re
import subprocess
import sys
import threading
import urllib.parse

from tests.peers.ports import free_port, stop, wait_listening

VENV_BIN = os.path.dirname(sys.executable)
# moto accepts any key; these only have to look real (the leak tests search for the secret).
ACCESS_KEY = "AKIAVMIMAGEMOTO0TEST1"
SECRET_KEY = "motoSecret/8Hq2LxZ9wPn4VbT6yRu1sEoA4dHcJkF"


@dataclasses.dataclass
class MotoServer:
    endpoint: str
    process: subprocess.Popen

    def client(self, service, region="eu-west-1", endpoint=None):
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=endpoint or self.endpoint,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def auth(self, endpoint=None, **extra):
        """The module options that point a module of the collection at this server."""
        value = dict(endpoint_url=endpoint or self.endpoint, aws_access_key=ACCESS_KEY, aws_secret_key=SECRET_KEY)
        value.update(extra)
        return value

    def reset(self):
        """Forget every resource (moto's own reset endpoint)."""
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(self.endpoint).netloc, timeout=10)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()
        conn.close()

    def stop(self):
        stop(self.process)


def start(workdir):
    port = free_port()
    env = dict(os.environ, MOTO_EC2_LOAD_DEFAULT_AMIS="false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    log = open(os.path.join(workdir, "moto.log"), "wb")  # noqa: SIM115 - kept open for the server's life
    process = subprocess.Popen([os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    try:
        wait_listening("127.0.0.1", port, timeout=60, process=process)
    except Exception:
        stop(process)
        raise
    return MotoServer("http://127.0.0.1:%d" % port, process)


_COMPLETED = re.compile(rb"(<snapshotId>(snap-[0-9a-f]+)</snapshotId>.*?<status>)completed(</status>)", re.S)


class SlowCopies:
    """A front for moto on its own port: each snapshot id in ``slow`` is reported ``pending`` for ``polls`` DescribeSnapshots.

    ``looks[snapshot_id]`` counts how often a caller asked; ``max_pending`` is the most copies seen pending at once.
    """

    def __init__(self, upstream, polls, quota=None):
        self.upstream = urllib.parse.urlsplit(upstream).netloc
        self.polls = polls
        self.quota = quota  # answer CopySnapshot with ResourceLimitExceeded while this many copies are pending
        self.refused = 0
        self.slow = set()
        self.looks = {}
        self.max_pending = 0
        self.lock = threading.Lock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if b"Action=CopySnapshot" in body and front.over_quota():
                    data = (b"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>ResourceLimitExceeded</Code><Message>"
                            b"You have reached the maximum number of concurrent snapshot copies</Message></Error></Errors>"
                            b"<RequestID>slow-copies</RequestID></Response>")
                    self.send_response(400)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(front.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request("POST", self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                if b"Action=CopySnapshot" in body:
                    match = re.search(rb"<snapshotId>(snap-[0-9a-f]+)</snapshotId>", data)
                    if match:
                        with front.lock:
                            front.slow.add(match.group(1).decode())
                elif b"Action=DescribeSnapshots" in body:
                    data = front._rewrite(data)
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def over_quota(self):
        with self.lock:
            pending = sum(1 for snapshot_id in self.slow if self.looks.get(snapshot_id, 0) < self.polls)
            if self.quota is not None and pending >= self.quota:
                self.refused += 1
                return True
        return False

    def _rewrite(self, data):
        pending = set()

        def swap(match):
            snapshot_id = match.group(2).decode()
            with self.lock:
                if snapshot_id not in self.slow:
                    return match.group(0)
                self.looks[snapshot_id] = self.looks.get(snapshot_id, 0) + 1
                if self.looks[snapshot_id] > self.polls:
                    return match.group(0)
            pending.add(snapshot_id)
            return match.group(1) + b"pending" + match.group(3)

        data = _COMPLETED.sub(swap, data)
        with self.lock:
            self.max_pending = max(self.max_pending, len(pending))
        return data

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def write_velero_backup(s3, bucket, name, schedule, snapshots, phase="Completed", prefix=""):
    """Write backup ``name`` as Velero 1.x lays it out in its bucket.

    ``snapshots``: dicts with snapshot_id, pv, volume_id, volume_type, zone, iops, phase (default Completed).
    """
    import gzip
    import json

    root = (prefix.strip("/") + "/" if prefix.strip("/") else "") + "backups/%s/" % name
    labels = {"velero.io/storage-location": "default"}
    if schedule:
        labels["velero.io/schedule-name"] = schedule
    backup = {
        "kind": "Backup", "apiVersion": "velero.io/v1",
        "metadata": {"name": name, "namespace": "velero", "uid": "0b6c2a40-0000-4000-8000-%012d" % len(name), "labels": labels,
                     "creationTimestamp": "2026-03-10T01:00:00Z"},
        "spec": {"includedNamespaces": ["*"], "snapshotVolumes": True, "storageLocation": "default",
                 "volumeSnapshotLocations": ["default"], "ttl": "720h0m0s"},
        "status": {"version": 1, "formatVersion": "1.1.0", "phase": phase, "startTimestamp": "2026-03-10T01:00:00Z",
                   "completionTimestamp": "2026-03-10T01:02:00Z", "volumeSnapshotsAttempted": len(snapshots),
                   "volumeSnapshotsCompleted": sum(1 for s in snapshots if s.get("phase", "Completed") == "Completed")},
    }
    items = [{"spec": {"backupName": name, "backupUID": backup["metadata"]["uid"], "location": "default",
                       "persistentVolumeName": s["pv"], "providerVolumeID": s["volume_id"], "volumeType": s.get("volume_type", "gp3"),
                       "volumeAZ": s.get("zone", "eu-west-1a"), "volumeIOPS": s.get("iops")},
              "status": {"providerSnapshotID": s["snapshot_id"], "phase": s.get("phase", "Completed")}} for s in snapshots]
    s3.put_object(Bucket=bucket, Key=root + "velero-backup.json", Body=json.dumps(backup).encode())
    s3.put_object(Bucket=bucket, Key=root + "%s-volumesnapshots.json.gz" % name, Body=gzip.compress(json.dumps(items).encode()))
    s3.put_object(Bucket=bucket, Key=root + "%s.tar.gz" % name, Body=gzip.compress(b""))
    s3.put_object(Bucket=bucket, Key=root + "%s-logs.gz" % name, Body=gzip.compress(b"backup log\n"))


# --- pytest fixtures (import them into a test module) ---------------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def moto_session(tmp_path_factory):
    server = start(str(tmp_path_factory.mktemp("moto")))
    yield server
    server.stop()


@pytest.fixture
def moto_server(moto_session, monkeypatch):
    """The session's moto server, emptied for this test; AWS variables of the environment cleared."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "AWS_ENDPOINT_URL", "AWS_URL", "SNAPSHOT_COPY_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    moto_session.reset()
    return moto_session
