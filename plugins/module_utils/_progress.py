# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Progress of a long stage, written to a small JSON file that a polling task reads.

The file is replaced atomically (write to a temporary name, then rename), so a
reader never sees half a record. It holds no secrets: stage, byte counts, rate.
"""

from __future__ import annotations

import time

from ansible_collections.vmimage.replication.plugins.module_utils._files import read_json, write_json


def describe(record):
    """One human line for a progress record, e.g. 'convert: 45.0% (1.2 GiB of 2.0 GiB, 150.3 MiB/s)'."""
    total = record.get("total") or 0
    done = record.get("done") or 0
    percent = record.get("percent")
    parts = [record.get("stage", "work") + ":"]
    if percent is not None:
        parts.append("%.1f%%" % percent)
    if total:
        parts.append("(%s of %s, %s/s)" % (human_bytes(done), human_bytes(total), human_bytes(record.get("rate") or 0)))
    if record.get("state") and record["state"] != "running":
        parts.append(record["state"])
    return " ".join(parts)


def human_bytes(count):
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return ("%d %s" % (value, unit)) if unit == "B" else ("%.1f %s" % (value, unit))
        value /= 1024
    return "%d B" % count  # pragma: no cover - loop always returns


class ProgressFile:
    """Records done/total bytes for one stage; ``path=None`` makes every call a no-op."""

    def __init__(self, path, stage, total=0, interval=1.0, clock=time.monotonic):
        self.path = path
        self.stage = stage
        self.total = total
        self.interval = interval
        self._clock = clock
        self._started = clock()
        self._last_write = None
        self.done = 0

    def update(self, done, total=None, force=False):
        self.done = done
        if total is not None:
            self.total = total
        now = self._clock()
        if not force and self._last_write is not None and now - self._last_write < self.interval:
            return
        self._last_write = now
        self._write("running")

    def finish(self, state="finished"):
        if self.total:
            self.done = self.total if state == "finished" else self.done
        self._write(state)

    def record(self, state="running"):
        elapsed = max(self._clock() - self._started, 1e-9)
        percent = (100.0 * self.done / self.total) if self.total else None
        return {
            "stage": self.stage,
            "state": state,
            "done": self.done,
            "total": self.total,
            "percent": None if percent is None else round(min(percent, 100.0), 1),
            "rate": int(self.done / elapsed),
            "elapsed": round(elapsed, 3),
            "updated": time.time(),
        }

    def _write(self, state):
        if not self.path:
            return
        # Rewritten every second and read by a poller: atomic, but not worth an fsync.
        write_json(self.path, self.record(state), durable=False)


def read(path):
    """Return the last record written at ``path``, or None when there is none yet."""
    return read_json(path)
