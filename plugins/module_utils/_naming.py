# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Names, times and retention: pure functions, no I/O, UTC everywhere.

Names use the snapshot's time, never the time of the import:
``<server>-YYYYMMDD-HHMMSS`` for an image or snapshot, ``<server>-latest`` for
the rotating name, ``<prefix><server>/<server>-YYYYMMDD-HHMMSS.<fmt>`` for the
object that holds an image.
"""

from __future__ import annotations

import datetime
import re

# Written on every resource the collection makes; cleanup and retention only touch what carries it.
CREATED_BY = "vmimage.replication"

_UTC = datetime.timezone.utc
_ISO = "%Y-%m-%dT%H:%M:%SZ"
_STAMP = "%Y%m%d-%H%M%S"
_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STAMP_RE = re.compile(r"^\d{8}-\d{6}$")


def check_server(server):
    """Return ``server`` if it can be part of names and object keys, else raise ValueError."""
    if not isinstance(server, str) or not _SERVER.match(server) or len(server) > 200:
        raise ValueError(
            "server name %r is not usable in image names: use letters, digits, '.', '_' and '-', starting with a letter or digit" % (server,)
        )
    return server


def parse_time(value):
    """An aware UTC datetime (whole seconds) from an ISO 8601 string, ``YYYYMMDD-HHMMSS`` or an aware datetime.

    Naive datetimes and strings without a zone are rejected: a time without a zone
    cannot be put in order with the others.
    """
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if _STAMP_RE.match(text):
            parsed = datetime.datetime.strptime(text, _STAMP).replace(tzinfo=_UTC)
        else:
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.datetime.fromisoformat(text)
            except ValueError:
                raise ValueError("time %r is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SSZ)" % (value,)) from None
    else:
        raise ValueError("time %r is neither a string nor a datetime" % (value,))
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("time %r has no time zone; give it in UTC, for example 2026-01-31T23:59:00Z" % (value,))
    return parsed.astimezone(_UTC).replace(microsecond=0)


def format_time(value):
    """``YYYY-MM-DDTHH:MM:SSZ`` for a time accepted by parse_time."""
    return parse_time(value).strftime(_ISO)


def stamp(value):
    """``YYYYMMDD-HHMMSS`` for a time accepted by parse_time."""
    return parse_time(value).strftime(_STAMP)


def image_name(server, snapshot_time):
    """``<server>-YYYYMMDD-HHMMSS`` from the snapshot's UTC time."""
    return "%s-%s" % (check_server(server), stamp(snapshot_time))


def latest_name(server):
    """``<server>-latest``."""
    return "%s-latest" % check_server(server)


def normalize_prefix(prefix):
    """'' or a prefix that ends with exactly one '/' and does not start with one."""
    prefix = (prefix or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


def object_key(prefix, server, snapshot_time, fmt):
    """``<prefix><server>/<server>-YYYYMMDD-HHMMSS.<fmt>``."""
    if not fmt or not re.match(r"^[a-z0-9]+$", fmt):
        raise ValueError("format %r is not a file extension such as qcow2" % (fmt,))
    return "%s%s/%s.%s" % (normalize_prefix(prefix), check_server(server), image_name(server, snapshot_time), fmt)


def _order(image):
    return (parse_time(image["snapshot_time"]), image.get("name") or "")


def select_prune(images, keep_last, keep_days=None, now=None, latest=None):
    """The images to prune, oldest first.

    ``images`` are dicts with ``name`` and ``snapshot_time`` (and optionally
    ``created_by`` and ``latest``). The rule, exactly:

    - order the images by snapshot time, newest first (equal times: by name, the
      greater name counts as newer, so the answer never depends on input order);
    - the first ``keep_last`` of that order are kept;
    - an image outside them is pruned only if ``keep_days`` is unset or the image's
      snapshot time is more than ``keep_days`` days before ``now``;
    - the latest image (``latest`` names it, or the image has ``latest: true``) is
      never pruned, nor is an image whose ``created_by`` is set to anything but
      vmimage.replication.

    ``keep_last`` must be at least 1; ``now`` must be an aware datetime when
    ``keep_days`` is given.
    """
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError("keep_last must be a whole number of at least 1, not %r" % (keep_last,))
    cutoff = None
    if keep_days is not None:
        if isinstance(keep_days, bool) or not isinstance(keep_days, (int, float)) or keep_days < 0:
            raise ValueError("keep_days must be a number of days of 0 or more, not %r" % (keep_days,))
        if now is None:
            raise ValueError("now is required with keep_days")
        cutoff = parse_time(now) - datetime.timedelta(days=keep_days)
    ordered = sorted(images, key=_order, reverse=True)
    prune = []
    for image in ordered[keep_last:]:
        if image.get("latest") or (latest is not None and image.get("name") == latest):
            continue
        if image.get("created_by", CREATED_BY) != CREATED_BY:
            continue
        if cutoff is not None and parse_time(image["snapshot_time"]) >= cutoff:
            continue
        prune.append(image)
    prune.reverse()
    return prune
