"""S3 servers for the tests: rclone serve s3 and SeaweedFS, each on free loopback ports.

Keys reach the servers through the environment or a 0600 config file, never the
command line, so the secret-leak test can scan process command lines.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import sys

from tests.peers.ports import free_port, stop, wait_listening

VENV_BIN = os.path.dirname(sys.executable)


@dataclasses.dataclass
class S3Server:
    kind: str
    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str
    data_dir: str
    process: subprocess.Popen
    # Files the server makes outside its workdir at fixed places, removed once it has stopped.
    outside: tuple = ()

    def cos(self, **overrides):
        """The ``cos`` module option for this server."""
        value = dict(
            endpoint=self.endpoint,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )
        value.update(overrides)
        return value

    def client(self):
        import ibm_boto3
        from ibm_botocore.client import Config

        return ibm_boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def make_bucket(self, name):
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self):
        stop(self.process)
        for pattern in self.outside:
            for path in glob.glob(pattern):
                os.unlink(path)


def _binary(name):
    path = os.path.join(VENV_BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


def start_rclone(workdir, access_key_id, secret_access_key, region="us-south"):
    """``rclone serve s3`` over a directory; buckets are its subdirectories."""
    data = os.path.join(workdir, "rclone-data")
    os.makedirs(data, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    # rclone reads list flags from the environment as CSV: quote the pair.
    env["RCLONE_AUTH_KEY"] = '"%s,%s"' % (access_key_id, secret_access_key)
    env["RCLONE_CONFIG"] = os.path.join(workdir, "rclone.conf")
    log = open(os.path.join(workdir, "rclone.log"), "wb")  # noqa: SIM115 - kept open for the server's life
    cmd = [
        _binary("rclone"), "serve", "s3", data,
        "--addr", "127.0.0.1:%d" % port,
        # Parts may arrive out of order (concurrent uploads); do not hold them in memory.
        "--multipart-streaming-buffer-limit", "0",
        "--multipart-streaming-buffer-total", "0",
        "--log-level", "INFO",
    ]
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_listening("127.0.0.1", port, process=process)
    return S3Server("rclone", "http://127.0.0.1:%d" % port, access_key_id, secret_access_key, region, data, process)


# Every port `weed mini` would open; each gets a free one (the gRPC defaults are
# "http port + 10000", which overflows for high free ports and may collide).
_WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc", "volume.port.public",
    "filer.port", "filer.port.grpc", "filer.port.public",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
    "admin.port", "admin.port.grpc",
    "webdav.port", "metricsPort", "s3.metricsPort",
)


def _free_ports(count):
    """``count`` distinct free ports (held open together so none is handed out twice)."""
    import socket

    socks = []
    try:
        while len(socks) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _wait_s3(endpoint, process, timeout=90.0):
    """Wait until the S3 gateway answers an HTTP request (any status: it is up and signing)."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("weed mini exited with %s before its S3 gateway answered" % process.returncode)
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # 403 AccessDenied for an anonymous request: the gateway is serving
        except OSError:
            time.sleep(0.25)
    raise RuntimeError("SeaweedFS S3 gateway at %s did not answer within %ss" % (endpoint, timeout))


def start_seaweedfs(workdir, access_key_id, secret_access_key, region="us-south"):
    """SeaweedFS ``weed mini`` (master, volume, filer, S3) on free loopback ports.

    The keys go into a 0600 ``-s3.config`` JSON file, never onto the command line.
    """
    import json

    data = os.path.join(workdir, "weed-data")
    os.makedirs(data, exist_ok=True)
    config = os.path.join(workdir, "s3.json")
    identities = {
        "identities": [
            {
                "name": "vmimage-test",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(identities, handle)
    ports = dict(zip(_WEED_PORT_FLAGS, _free_ports(len(_WEED_PORT_FLAGS))))
    cmd = [
        # glog's files and the local sockets default to a fixed /tmp: keep them in the workdir.
        _binary("weed"), "-logdir=%s" % workdir, "mini",
        "-dir=%s" % data,
        "-s3.localSocket=%s" % os.path.join(workdir, "s3.sock"),
        "-filer.localSocket=%s" % os.path.join(workdir, "filer.sock"),
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false", "-webdav=false",
        "-s3.config=%s" % config,
        "-s3.autoCreateBucket=false",
    ] + ["-%s=%d" % (flag, port) for flag, port in ports.items()]
    log = open(os.path.join(workdir, "weed.log"), "wb")  # noqa: SIM115 - kept open for the server's life
    # Its own process group: `weed mini` is one process, but stop() must never reach the test runner.
    env = dict(os.environ, TMPDIR=workdir)
    process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    endpoint = "http://127.0.0.1:%d" % ports["s3.port"]
    try:
        _wait_s3(endpoint, process)
    except Exception:
        stop(process, timeout=30.0)
        raise
    # Its in-process gRPC sockets are always /tmp/seaweedfs-<component>-grpc-<port>.sock (no flag moves them).
    outside = tuple("/tmp/seaweedfs-*-grpc-%d.sock" % port for port in ports.values())
    return S3Server("seaweedfs", endpoint, access_key_id, secret_access_key, region, data, process, outside)
