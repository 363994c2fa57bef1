# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The VPC emulator as a subprocess, and its private ``/_emulator/`` control path (test knobs over HTTP).

``python -m tests.emulators.vpc_server --api-key-file F [--regions us-south,eu-de] [--data-dir D] [--by-id-dir B]
[--delay S] [--token-seconds N] [--s3-endpoint URL]`` binds a free 127.0.0.1 port, prints one JSON line
``{url, iam_url, regions, pid}`` and serves until SIGTERM/SIGINT, when it detaches every loop device and
removes every by-id link it made. The API key comes from the file (or ``VPC_EMULATOR_API_KEY``), never argv.
S3 keys for image imports come from ``VPC_EMULATOR_S3_ACCESS_KEY`` / ``VPC_EMULATOR_S3_SECRET_KEY``.
The control calls are listed in ``CONTROLS`` and in ``tests/emulators/README.md``; they need no token
(the emulator listens on 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading

import requests

from tests.emulators.vpc_server import ApiError, VpcEmulator
from tests.peers.ports import stop as stop_process

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = ("delay", "token_seconds")


def _json(raw):
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "bad_request", "the control body is not JSON") from None


def register_controls(emu):
    """The core's own knobs (resource modules add theirs: seed volumes, instances, volume bytes)."""
    def faults(params, query, raw):
        body = _json(raw)
        try:
            re.compile(body["path_regex"])
            emu.inject(body.get("method", "*"), body["path_regex"], int(body["status"]), int(body.get("count", body.get("times", 1))),
                       body.get("retry_after"), body.get("code"))
        except (KeyError, ValueError, TypeError, re.error) as exc:
            raise ApiError(400, "bad_request", "a fault needs method, path_regex (a regex) and status: %s" % exc) from None
        return 201, {}

    def failures(params, query, raw):
        body = _json(raw)
        if body.get("kind") not in ("volume", "snapshot", "instance", "image"):
            raise ApiError(400, "bad_request", "kind must be volume, snapshot, instance or image")
        emu.fail_next(body["kind"], int(body.get("count", body.get("times", 1))))
        return 200, {"failures": emu.failures}

    def quotas(params, query, raw):
        body = _json(raw)
        if not body.get("kind"):
            raise ApiError(400, "bad_request", "a quota needs kind and limit (null: no quota)")
        emu.set_quota(body["kind"], None if body.get("limit") is None else int(body["limit"]))
        return 200, {"quotas": emu.quotas}

    def settings(params, query, raw):
        body = _json(raw)
        unknown = sorted(set(body) - set(SETTINGS))
        if unknown:
            raise ApiError(400, "bad_request", "unknown settings %s; known: %s" % (", ".join(unknown), ", ".join(SETTINGS)))
        for key, value in body.items():
            setattr(emu, key, int(value) if key == "token_seconds" else float(value))
        return 200, {key: getattr(emu, key) for key in SETTINGS}

    def expire_tokens(params, query, raw):
        emu.expire_tokens()
        return 200, {}

    def state(params, query, raw):
        kinds = {kind: len(records) for kind, records in emu.store.items()}
        loops = [rec["_loop"] for rec in emu.store.get("volume_attachment", {}).values() if rec.get("_loop")]
        return 200, {"records": kinds, "loop_devices": loops, "tokens_issued": emu.tokens_issued,
                     "faults_left": sum(f[3] for f in emu.faults)}

    def requests_seen(params, query, raw):
        return 200, {"requests": [list(r) for r in emu.requests]}

    emu.control("POST", "/faults", faults)
    emu.control("POST", "/failures", failures)
    emu.control("POST", "/quotas", quotas)
    emu.control("POST", "/settings", settings)
    emu.control("POST", "/expire-tokens", expire_tokens)
    emu.control("GET", "/state", state)
    emu.control("GET", "/requests", requests_seen)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.vpc_server", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--api-key-file", help="a file holding the API key IAM accepts (else VPC_EMULATOR_API_KEY)")
    parser.add_argument("--regions", default="us-south,eu-de")
    parser.add_argument("--data-dir", help="volume, snapshot and image bytes live here as <id>.img")
    parser.add_argument("--by-id-dir", help="virtio-<serial> links of attached volumes are made here")
    parser.add_argument("--delay", type=float, default=0.5, help="seconds a resource stays in its pending state")
    parser.add_argument("--token-seconds", type=int, default=3600)
    parser.add_argument("--s3-endpoint", help="the S3 server image imports read cos:// objects from")
    args = parser.parse_args(argv)
    api_key = os.environ.get("VPC_EMULATOR_API_KEY", "")
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as handle:
            api_key = handle.read().strip()
    if not api_key:
        parser.error("no API key: give --api-key-file (a non-empty file) or set VPC_EMULATOR_API_KEY")
    for flag, path in (("--data-dir", args.data_dir), ("--by-id-dir", args.by_id_dir)):
        if path and not os.path.isdir(path):
            parser.error("%s %s is not a directory" % (flag, path))
    s3 = {"endpoint": args.s3_endpoint, "access_key": os.environ.get("VPC_EMULATOR_S3_ACCESS_KEY"),
          "secret_key": os.environ.get("VPC_EMULATOR_S3_SECRET_KEY")} if args.s3_endpoint else None
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_unused: stopped.set())
    emulator = VpcEmulator(api_key, regions=args.regions.split(","), token_seconds=args.token_seconds, delay=args.delay,
                           data_dir=args.data_dir, by_id_dir=args.by_id_dir, s3=s3)
    emulator.start()
    try:
        print(json.dumps({"url": emulator.url, "iam_url": emulator.iam_url, "regions": emulator.regions, "pid": os.getpid()}),
              flush=True)
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


class Process:
    """A running emulator subprocess: ``url``, ``service_url(region)``; ``control()`` turns its knobs; ``stop()`` ends it."""

    def __init__(self, process, info, by_id_dir):
        self.process, self.info, self.by_id_dir = process, info, by_id_dir
        self.url, self.iam_url, self.regions = info["url"], info["iam_url"], info["regions"]

    def service_url(self, region):
        return "%s/%s/v1" % (self.url, region)

    def control(self, method, path, body=None, data=None):
        answer = requests.request(method, "%s/_emulator%s" % (self.url, path), json=body, data=data, timeout=30)
        if answer.status_code >= 400:
            raise RuntimeError("control %s %s: %s %s" % (method, path, answer.status_code, answer.text))
        return answer.json() if answer.content else None

    # Helpers the tests use, all over the control path.
    def seed_volume(self, region, name, capacity=10, zone=None, **extra):
        return self.control("POST", "/volumes", dict(extra, region=region, name=name, capacity=capacity, zone=zone))

    def write_volume(self, volume_id, data):
        self.control("PUT", "/volumes/%s/bytes" % volume_id, data=data)

    def seed_instance(self, region, name=None, **extra):
        return self.control("POST", "/instances", dict(extra, region=region, name=name))

    def inject(self, method, path_regex, status, count=1, retry_after=None, code=None):
        self.control("POST", "/faults", {"method": method, "path_regex": path_regex, "status": status, "count": count,
                                         "retry_after": retry_after, "code": code})

    def fail_next(self, kind, count=1):
        self.control("POST", "/failures", {"kind": kind, "count": count})

    def set_quota(self, kind, limit):
        self.control("POST", "/quotas", {"kind": kind, "limit": limit})

    def settings(self, **values):
        return self.control("POST", "/settings", values)

    def state(self):
        return self.control("GET", "/state")

    def stop(self):
        """SIGTERM, wait; then check the emulator left no loop device and no by-id link behind."""
        loops = []
        try:
            loops = self.state()["loop_devices"] if self.process.poll() is None else []
        finally:  # an emulator that no longer answers is stopped all the same
            stop_process(self.process)
        self.process.stdout.close()
        left = sorted(os.listdir(self.by_id_dir)) if self.by_id_dir else []
        attached = [loop for loop in loops if subprocess.run(["losetup", loop], capture_output=True, check=False).returncode == 0]
        if left or attached or self.process.returncode != 0:
            raise RuntimeError("the VPC emulator exited %s leaving links %s and loop devices %s"
                               % (self.process.returncode, left, attached))


def start(api_key, data_dir=None, by_id_dir=None, **options):
    """Start ``python -m tests.emulators.vpc_server`` (API key via the environment) and wait for its JSON line."""
    argv = [sys.executable, "-m", "tests.emulators.vpc_server"]
    for flag, value in dict(options, data_dir=data_dir, by_id_dir=by_id_dir).items():
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), ",".join(value) if isinstance(value, (list, tuple)) else str(value)]
    env = dict(os.environ, VPC_EMULATOR_API_KEY=api_key)
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env)  # pylint: disable=consider-using-with
    line = process.stdout.readline()
    if not line:
        stop_process(process)
        process.stdout.close()
        raise RuntimeError("the VPC emulator exited (%s) before printing its URL" % process.poll())
    return Process(process, json.loads(line), by_id_dir)
