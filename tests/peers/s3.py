"""S3 servers for the tests: rclone serve s3 and SeaweedFS, each on free loopback ports.

Keys reach the servers through the environment or a 0600 config file, never the
command line, so the secret-leak test can scan process command lines.
"""

from __future__ import annotations

import dataclasses
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
