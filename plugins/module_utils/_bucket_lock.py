# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One run per server across controllers: the run lock in the bucket the run uses.

Two AWX execution nodes, each with its own conversion host, share no file system but do share the
bucket, so the lock lives there, beside the server's catalog (``<prefix><server>/.lock``). Its JSON
record names the owner token, the controller, its pid, the start and the last heartbeat. Ages are
measured on the server's clock (an object's LastModified against the Date of the answer), so the
controllers' clocks never matter.

S3 has no O_EXCL everywhere, so one of two protocols is used, chosen by probing the endpoint:

- ``conditional``: the endpoint honours ``If-None-Match: *`` on PutObject (AWS S3 since 2024,
  SeaweedFS). Creating ``.lock`` with it is atomic; a stale lock is replaced with ``If-Match: <its
  ETag>`` (one taker wins); heartbeat and release also go through ``If-Match``.
- ``claims``: the endpoint ignores the condition (rclone serve s3). Each taker follows Lamport's
  bakery: it writes ``.lock.claims/choosing-<token>``, lists the live claims, writes
  ``.lock.claims/<1 + highest number>-<token>``, removes its choosing claim, waits until no other
  taker is choosing, and holds the lock when its claim is the first live one by (number, token).
  A loser removes its claim. Strongly consistent listings (AWS, COS, SeaweedFS, rclone) are all it needs.

Each protocol also looks at the other's objects, so a lock is seen whatever protocol took it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _naming
from ansible_collections.vmimage.replication.plugins.module_utils._cos import BrokenRead, ClientError, error_code
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

CONDITIONAL = "conditional"
CLAIMS = "claims"
_LOST = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_MISSING = ("404", "NoSuchKey", "NotFound")
# A taker stays "choosing" for a few requests; one silent for this long died choosing.
CHOOSING_LIMIT = 60.0


def lock_key(prefix, server):
    """The lock object of ``server``: ``<prefix><server>/.lock``."""
    try:
        return "%s%s/.lock" % (_naming.normalize_prefix(prefix), _naming.check_server(server))
    except ValueError as exc:
        raise ReplicationError("Failed to lock server %s: %s" % (server, exc), server=server) from None


def claims_prefix(key):
    return key + ".claims/"


@contextlib.contextmanager
def _headers(client, operation, headers):
    """Send ``headers`` with the next ``operation`` calls (the SDK has no parameter for S3's conditional writes)."""
    event, uid = "before-sign.s3.%s" % operation, "vmimage-run-lock-%s" % operation

    def add(request, **_unused):
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register(event, add, unique_id=uid)
    try:
        yield
    finally:
        client.meta.events.unregister(event, unique_id=uid)


def _server_now(response):
    """The endpoint's clock, from the Date of its answer (this host's clock when it gives none)."""
    date = ((response or {}).get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return time.time()


def _body(record):
    return json.dumps(record, sort_keys=True).encode()


def _parse(data):
    try:
        record = json.loads(data)
    except ValueError:
        record = {}
    return record if isinstance(record, dict) else {}


def _put(client, bucket, key, record, **conditions):
    """Write ``record`` at ``key``; with ``conditions`` (If-None-Match / If-Match) return False when the endpoint refuses it."""
    try:
        with _headers(client, "PutObject", conditions):
            client.put_object(Bucket=bucket, Key=key, Body=_body(record), ContentType="application/json")
    except ClientError as exc:
        if conditions and error_code(exc) in _LOST:
            return False
        raise
    return True


def _get(client, bucket, key, attempts=3):
    """The record at ``key`` with its ``etag`` and ``age`` (server clock), or None."""
    for attempt in range(attempts):
        try:
            response = client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
            break
        except BrokenRead:
            # A read racing an overwrite of the lock (a heartbeat) can break off mid-body: rclone, for one, answers with
            # the old length. The next read sees the whole new record.
            if attempt == attempts - 1:
                raise
        except ClientError as exc:
            if error_code(exc) in _MISSING:
                return None
            raise
    record = _parse(body)
    record["etag"] = response.get("ETag")
    record["age"] = max(0.0, _server_now(response) - response["LastModified"].timestamp())
    return record


def _delete(client, bucket, key, **conditions):
    try:
        with _headers(client, "DeleteObject", conditions):
            client.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in _MISSING or (conditions and error_code(exc) in _LOST):
            return False
        raise
    return True


def detect_mode(client, bucket, key, token):
    """CONDITIONAL when the endpoint refuses a second ``If-None-Match: *`` write of a probe object, else CLAIMS."""
    probe = "%s.probe-%s" % (key, token)
    try:
        _put(client, bucket, probe, {"token": token})
        return CONDITIONAL if not _put(client, bucket, probe, {"token": token}, **{"If-None-Match": "*"}) else CLAIMS
    finally:
        _delete(client, bucket, probe)


def parse_claim(name):
    """``(number, token)`` of a claim's name; number None while the taker is choosing. None for other names."""
    head, sep, token = name.partition("-")
    if not sep or not token:
        return None
    if head == "choosing":
        return None, token
    return (int(head), token) if head.isdigit() else None


def list_claims(client, bucket, key):
    """Claims under ``key``: [{key, number, token, age}] sorted by (number, token), choosing ones last."""
    found, kwargs = [], {"Bucket": bucket, "Prefix": claims_prefix(key)}
    while True:
        page = client.list_objects_v2(**kwargs)
        now = _server_now(page)
        for item in page.get("Contents") or []:
            parsed = parse_claim(item["Key"][len(kwargs["Prefix"]):])
            if parsed is not None:
                found.append(dict(key=item["Key"], number=parsed[0], token=parsed[1],
                                  age=max(0.0, now - item["LastModified"].timestamp())))
        if not page.get("IsTruncated"):
            break
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    return sorted(found, key=claim_order)


def claim_order(claim):
    return (claim["number"] is None, claim["number"] or 0, claim["token"])


def winner(claims, stale_after):
    """The live numbered claim that holds the lock (lowest (number, token)), or None."""
    live = [claim for claim in claims if claim["number"] is not None and claim["age"] <= stale_after]
    return min(live, key=claim_order) if live else None


def next_number(claims, stale_after):
    return 1 + max([claim["number"] for claim in claims if claim["number"] is not None and claim["age"] <= stale_after] or [0])


def others_choosing(claims, token, limit=CHOOSING_LIMIT):
    """Live choosing claims of other takers (whose number is not known yet)."""
    return [claim for claim in claims if claim["number"] is None and claim["token"] != token and claim["age"] <= limit]


def holder(client, bucket, key, stale_after):
    """The live holder's record (with ``age``, ``mode`` and ``key``), whatever protocol took it; None when the lock is free."""
    record = _get(client, bucket, key)
    if record is not None and record["age"] <= stale_after:
        return dict(record, mode=CONDITIONAL, key=key)
    first = winner(list_claims(client, bucket, key), stale_after)
    if first is None:
        return None
    record = _get(client, bucket, first["key"]) or {"token": first["token"]}
    return dict(record, age=first["age"], mode=CLAIMS, key=first["key"])


def _acquire_conditional(client, bucket, key, record, stale_after, _unused_pause=None):
    """One attempt: ``(True, record)`` when taken, else ``(False, holder)``."""
    if _put(client, bucket, key, record, **{"If-None-Match": "*"}):
        return True, record
    current = _get(client, bucket, key)
    if current is None:
        return False, None  # released meanwhile: the next attempt may take it
    if current["age"] > stale_after and _put(client, bucket, key, record, **{"If-Match": current["etag"]}):
        return True, record
    return False, dict(current, mode=CONDITIONAL, key=key)


def _acquire_claims(client, bucket, key, record, stale_after, pause, choosing_wait=0.2):
    """One bakery round; a loser removes its claim."""
    token = record["token"]
    base = claims_prefix(key)
    choosing = "%schoosing-%s" % (base, token)
    _put(client, bucket, choosing, record)
    claims = list_claims(client, bucket, key)
    for claim in claims:  # take-over: a claim whose heartbeat went silent belonged to a run that is gone
        if claim["token"] != token and claim["age"] > (stale_after if claim["number"] is not None else min(stale_after, CHOOSING_LIMIT)):
            _delete(client, bucket, claim["key"])
    mine = "%s%012d-%s" % (base, next_number(claims, stale_after), token)
    _put(client, bucket, mine, record)
    _delete(client, bucket, choosing)
    deadline = time.monotonic() + CHOOSING_LIMIT
    while True:
        claims = list_claims(client, bucket, key)
        if not others_choosing(claims, token) or time.monotonic() > deadline:
            break
        pause(choosing_wait)
    first = winner(claims, stale_after)
    if first is not None and first["key"] == mine:
        return True, dict(record, key=mine)
    _delete(client, bucket, mine)
    current = holder(client, bucket, key, stale_after)
    return False, current


def acquire(client, bucket, key, record, stale_after, wait, mode, clock=time.monotonic, pause=time.sleep, interval=2.0):
    """Take the lock for ``record['token']``; return ``(changed, record_or_holder)``.

    Raise nothing: a lock still held when ``wait`` runs out comes back as ``(False, holder)`` with another token.
    """
    token = record["token"]
    deadline = clock() + max(0.0, wait)
    while True:
        current = holder(client, bucket, key, stale_after)
        if current is not None and current.get("token") == token:
            heartbeat(client, bucket, key, token, mode, record=record, stale_after=stale_after)
            return False, current
        if current is None:
            attempt = _acquire_conditional if mode == CONDITIONAL else _acquire_claims
            taken, found = attempt(client, bucket, key, record, stale_after, pause)
            if taken:
                return True, dict(found, age=0.0, mode=mode, key=found.get("key", key))
            current = found
        if current is not None and clock() >= deadline:
            return False, current
        pause(max(0.05, min(interval, deadline - clock())) if current is not None else 0.05)


def heartbeat(client, bucket, key, token, mode, record=None, clock=time.time, stale_after=None):
    """Refresh the lock's age when ``token`` holds it; return whether it does. Never re-creates a lock taken over.

    A claim (no conditional write) is read, then written: a taker could remove it as stale in between, and the write
    would bring it back. So a claim already older than half of ``stale_after`` (takers wait for all of it, and a live
    run beats far more often) is counted as lost instead of refreshed."""
    if mode == CONDITIONAL:
        current = _get(client, bucket, key)
        if current is None or current.get("token") != token:
            return False
        fresh = {name: value for name, value in current.items() if name not in ("etag", "age")}
        fresh["heartbeat"] = clock()
        return _put(client, bucket, key, fresh, **{"If-Match": current["etag"]})
    mine = [claim for claim in list_claims(client, bucket, key) if claim["token"] == token and claim["number"] is not None]
    if not mine:
        return False
    current = _get(client, bucket, mine[0]["key"])
    if current is None or (stale_after is not None and current["age"] > stale_after / 2.0):
        return False
    fresh = {name: value for name, value in (record or current).items() if name not in ("etag", "age", "key", "mode")}
    fresh["heartbeat"] = clock()
    _put(client, bucket, mine[0]["key"], fresh)
    return True


def release(client, bucket, key, token):
    """Remove the lock when ``token`` holds it, whatever protocol took it; return whether it did. Another run's lock is never touched."""
    removed = False
    current = _get(client, bucket, key)
    if current is not None and current.get("token") == token:
        removed = _delete(client, bucket, key, **{"If-Match": current["etag"]})
    for claim in list_claims(client, bucket, key):
        if claim["token"] == token:
            removed = _delete(client, bucket, claim["key"]) or removed
    return removed
