# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The PowerVS emulator as a subprocess, and its private ``/_emulator/`` control path (test knobs over HTTP).

``python -m tests.emulators.powervs --api-key-file F [--cos REGION=S3_URL ...]`` prints one JSON line
``{url, iam_url, workspace_id, crn, region, storage_types, pid}`` and serves until SIGTERM/SIGINT. The API key is
read from a file so it is never on a command line. ``start(...)`` does that from a test and returns a handle.

Control path (no token needed; the emulator listens on 127.0.0.1 only):

| call | body | effect |
|---|---|---|
| ``POST /_emulator/workspaces`` | ``{region, storage_types}`` | a new workspace: ``{id, crn, region, storage_types}`` |
| ``POST /_emulator/faults`` | ``{method, path_regex, status, times, retry_after}`` | the next ``times`` matching calls answer ``status`` |
| ``POST /_emulator/fail-next-import`` | ``{message}`` | the next import job fails with ``message`` |
| ``POST /_emulator/jobs/{ws}/{job}/fail`` | ``{message}`` | a queued/running job fails now |
| ``POST /_emulator/timing`` | ``{queued_seconds, running_seconds, progress_steps, token_seconds}`` | slower or faster jobs/tokens |
| ``POST /_emulator/hold`` | ``{hold: true/false}`` | jobs stay where they are (queued/running) until released |
| ``POST /_emulator/expire-tokens`` | | every token issued so far stops working |
| ``GET /_emulator/state`` | | workspaces with their images and jobs, import bodies (no secretKey) |
| ``GET /_emulator/requests`` | | ``[[method, path, status], ...]`` of the API calls |
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

from tests.peers.ports import stop as stop_process

TIMING = ("queued_seconds", "running_seconds", "progress_steps", "token_seconds")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bad(message):
    return 400, {"code": 400, "description": message, "error": "bad request", "message": message}


def control(emulator, method, path, body):  # pylint: disable=too-many-return-statements
    """Answer one ``/_emulator/...`` call: ``(status, payload)``."""
    rest = path[len("/_emulator"):]
    if method == "GET" and rest == "/state":
        with emulator.lock:
            return 200, {"workspaces": {ws.id: {"crn": ws.crn, "region": ws.region, "storage_types": ws.storage_types,
                                                "images": list(ws.images.values()),
                                                "jobs": [emulator._job_view(j) for j in ws.jobs.values()]}  # pylint: disable=protected-access
                                        for ws in emulator.workspaces.values()},
                         "import_bodies": list(emulator.import_bodies)}
    if method == "GET" and rest == "/requests":
        return 200, {"requests": [list(r) for r in emulator.requests]}
    if method != "POST":
        return _bad("%s %s is not a control call" % (method, path))
    if rest == "/workspaces":
        ws = emulator.add_workspace(region=body.get("region") or "us-south", storage_types=body.get("storage_types") or ("tier0", "tier1", "tier3"))
        return 201, {"id": ws.id, "crn": ws.crn, "region": ws.region, "storage_types": ws.storage_types}
    if rest == "/faults":
        try:
            re.compile(body["path_regex"])
            emulator.fail(body["method"], body["path_regex"], int(body["status"]), int(body.get("times", 1)), body.get("retry_after"))
        except (KeyError, ValueError, re.error) as exc:
            return _bad("a fault needs method, path_regex (a regex) and status: %s" % exc)
        return 201, {}
    if rest == "/fail-next-import":
        emulator.fail_import = body.get("message") or "the import job failed (injected)"
        return 200, {}
    match = re.match(r"^/jobs/([^/]+)/([^/]+)/fail$", rest)
    if match:
        try:
            job = emulator.fail_job(match.group(1), match.group(2), body.get("message") or "the job failed (injected)")
        except KeyError:
            return 404, {"code": 404, "description": "no such workspace or job", "error": "not found", "message": "no such workspace or job"}
        return 200, {"id": job["id"], "state": job["status"]["state"]}
    if rest == "/timing":
        unknown = sorted(set(body) - set(TIMING))
        if unknown:
            return _bad("unknown timing knobs: %s; known: %s" % (", ".join(unknown), ", ".join(TIMING)))
        for key, value in body.items():
            setattr(emulator, key, int(value) if key in ("progress_steps", "token_seconds") else float(value))
        return 200, {k: getattr(emulator, k) for k in TIMING}
    if rest == "/hold":
        (emulator.hold_jobs.set if body.get("hold", True) else emulator.hold_jobs.clear)()
        return 200, {"hold": emulator.hold_jobs.is_set()}
    if rest == "/expire-tokens":
        emulator.expire_tokens()
        return 200, {}
    return _bad("unknown control call %s" % path)


def main(argv=None):
    from tests.emulators.powervs import PowerVSEmulator  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(prog="python -m tests.emulators.powervs", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--api-key-file", required=True, help="a file holding the API key IAM accepts (never the key itself on argv)")
    parser.add_argument("--cos", action="append", default=[], metavar="REGION=S3_URL", help="the S3 endpoint an import reads from, per region")
    parser.add_argument("--region", default="us-south")
    parser.add_argument("--storage-types", default="tier0,tier1,tier3")
    parser.add_argument("--token-seconds", type=int, default=3600)
    parser.add_argument("--queued-seconds", type=float, default=0.3)
    parser.add_argument("--running-seconds", type=float, default=1.0)
    parser.add_argument("--progress-steps", type=int, default=4)
    args = parser.parse_args(argv)
    with open(args.api_key_file, encoding="utf-8") as handle:
        api_key = handle.read().strip()
    if not api_key:
        parser.error("--api-key-file %s is empty" % args.api_key_file)
    cos = dict(item.split("=", 1) for item in args.cos)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_unused: stopped.set())
    with PowerVSEmulator(api_key, cos, token_seconds=args.token_seconds, queued_seconds=args.queued_seconds,
                         running_seconds=args.running_seconds, progress_steps=args.progress_steps) as emulator:
        ws = emulator.add_workspace(region=args.region, storage_types=args.storage_types.split(","))
        print(json.dumps({"url": emulator.url, "iam_url": emulator.iam_url, "workspace_id": ws.id, "crn": ws.crn, "region": ws.region,
                          "storage_types": ws.storage_types, "pid": os.getpid()}), flush=True)
        try:
            stopped.wait()
        except KeyboardInterrupt:
            pass
    return 0


class Process:
    """A running emulator subprocess: ``url``, ``workspace_id``, ``crn``; ``control()`` turns its knobs; ``stop()`` ends it."""

    def __init__(self, process, info):
        self.process, self.info = process, info
        self.url, self.iam_url, self.workspace_id, self.crn = info["url"], info["iam_url"], info["workspace_id"], info["crn"]

    def control(self, method, path, body=None):
        answer = requests.request(method, "%s/_emulator%s" % (self.url, path), json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def stop(self):
        stop_process(self.process)
        self.process.stdout.close()


def start(api_key_file, cos=None, **options):
    """Start ``python -m tests.emulators.powervs`` and wait for its JSON line; ``options`` are its flags (region=..., ...)."""
    argv = [sys.executable, "-m", "tests.emulators.powervs", "--api-key-file", str(api_key_file)]
    for region, endpoint in (cos or {}).items():
        argv += ["--cos", "%s=%s" % (region, endpoint)]
    for key, value in options.items():
        argv += ["--" + key.replace("_", "-"), ",".join(value) if isinstance(value, (list, tuple)) else str(value)]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)  # pylint: disable=consider-using-with
    line = process.stdout.readline()
    if not line:
        stop_process(process)
        process.stdout.close()
        raise RuntimeError("the PowerVS emulator exited (%s) before printing its URL" % process.poll())
    return Process(process, json.loads(line))
