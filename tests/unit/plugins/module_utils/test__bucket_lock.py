# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""_bucket_lock's logic: claim names and order, the bakery's choosing wait under an interleaving that breaks a plain
"first claim wins", conditional writes, ages on the endpoint's clock. The real servers are in tests/integration."""

from __future__ import annotations

import datetime
import email.utils
import threading
import time

import pytest
from ibm_botocore.exceptions import ClientError
from urllib3.exceptions import ProtocolError

from ansible_collections.vmimage.replication.plugins.module_utils import _bucket_lock, _run_lock
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


class FakeS3:
    """Objects in a dict, LastModified and Date from ``now`` (the endpoint's clock); conditions honoured when asked."""

    def __init__(self, honours_conditions, now=1_800_000_000.0):
        self.honours = honours_conditions
        self.now = now
        self.objects = {}  # key -> (body, etag, last_modified)
        self.handlers = {}
        self.before_put = None  # a hook the race test uses to pause one taker
        self.lock = threading.RLock()
        self.meta = self

    @property
    def events(self):
        return self

    def register(self, event, handler, unique_id):
        self.handlers[unique_id] = (event, handler)

    def unregister(self, event, unique_id):
        self.handlers.pop(unique_id, None)

    def _headers(self, operation):
        class Request:
            headers = {}
        request = Request()
        request.headers = {}
        for event, handler in list(self.handlers.values()):
            if event == "before-sign.s3.%s" % operation:
                handler(request=request)
        return request.headers if self.honours else {}

    def _answer(self, **fields):
        fields["ResponseMetadata"] = {"HTTPHeaders": {"date": email.utils.formatdate(self.now, usegmt=True)}}
        return fields

    @staticmethod
    def _error(code):
        return ClientError({"Error": {"Code": code}}, "op")

    def _check(self, key, headers):
        current = self.objects.get(key)
        if headers.get("If-None-Match") == "*" and current is not None:
            raise self._error("PreconditionFailed")
        if "If-Match" in headers and (current is None or current[1] != headers["If-Match"]):
            raise self._error("PreconditionFailed")

    def put_object(self, Bucket, Key, Body, ContentType=None):  # noqa: N803 - the SDK's names
        if self.before_put:
            self.before_put(Key)
        headers = self._headers("PutObject")
        with self.lock:
            self._check(Key, headers)
            etag = '"%032x"' % (hash((Key, Body, self.now)) & (2 ** 128 - 1))
            self.objects[Key] = (Body, etag, self.now)
        return self._answer(ETag=etag)

    def get_object(self, Bucket, Key):  # noqa: N803
        with self.lock:
            if Key not in self.objects:
                raise self._error("NoSuchKey")
            body, etag, modified = self.objects[Key]

        class Stream:
            def read(self):
                return body
        return self._answer(Body=Stream(), ETag=etag, LastModified=datetime.datetime.fromtimestamp(modified, datetime.timezone.utc))

    def delete_object(self, Bucket, Key):  # noqa: N803
        headers = self._headers("DeleteObject")
        with self.lock:
            self._check(Key, headers)
            self.objects.pop(Key, None)
        return self._answer()

    def list_objects_v2(self, Bucket, Prefix, ContinuationToken=None):  # noqa: N803
        with self.lock:
            items = [{"Key": key, "LastModified": datetime.datetime.fromtimestamp(value[2], datetime.timezone.utc)}
                     for key, value in sorted(self.objects.items()) if key.startswith(Prefix)]
        return self._answer(Contents=items, IsTruncated=False)


KEY = "images/web01/.lock"


def record(token):
    return dict(token=token, host="ctl", pid=1, started=0, heartbeat=0, server="web01")


def test_lock_key_normalises_the_prefix_and_refuses_bad_names():
    assert _bucket_lock.lock_key("images", "web01") == KEY
    assert _bucket_lock.lock_key("images/", "web01") == KEY
    assert _bucket_lock.lock_key("", "web01") == "web01/.lock"
    with pytest.raises(ReplicationError):
        _bucket_lock.lock_key("images/", "../web01")


def test_claim_names_parse_and_sort_by_number_then_token():
    assert _bucket_lock.parse_claim("000000000012-tok-a") == (12, "tok-a")
    assert _bucket_lock.parse_claim("choosing-tok-a") == (None, "tok-a")
    assert _bucket_lock.parse_claim("junk") is None and _bucket_lock.parse_claim("x1-tok") is None
    claims = [dict(key="c", number=2, token="a", age=0), dict(key="b", number=1, token="z", age=0),
              dict(key="a", number=1, token="y", age=5000), dict(key="d", number=None, token="q", age=0)]
    # The stale claim (age past stale_after) neither wins nor counts for the next number; choosing ones never win.
    assert _bucket_lock.winner(claims, 900)["key"] == "b"
    assert _bucket_lock.next_number(claims, 900) == 3
    assert _bucket_lock.next_number([], 900) == 1
    assert [c["token"] for c in _bucket_lock.others_choosing(claims, "me")] == ["q"]
    assert _bucket_lock.others_choosing(claims, "q") == []
    assert _bucket_lock.others_choosing([dict(claims[3], age=61)], "me") == []  # died while choosing


@pytest.mark.parametrize("honours, mode", [(True, _bucket_lock.CONDITIONAL), (False, _bucket_lock.CLAIMS)])
def test_probe_finds_the_protocol_and_leaves_nothing(honours, mode):
    s3 = FakeS3(honours)
    assert _bucket_lock.detect_mode(s3, "b", KEY, "tok") == mode
    assert s3.objects == {}


@pytest.mark.parametrize("mode", [_bucket_lock.CONDITIONAL, _bucket_lock.CLAIMS])
def test_hold_refuse_heartbeat_stale_takeover_release(mode):
    s3 = FakeS3(mode == _bucket_lock.CONDITIONAL)
    assert _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, mode)[0]
    changed, holder = _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 0, mode)
    assert not changed and holder["token"] == "tok-a" and holder["age"] == 0
    s3.now += 600  # ages come from the endpoint's clock
    assert _bucket_lock.holder(s3, "b", KEY, 900)["age"] == 600
    assert _bucket_lock.heartbeat(s3, "b", KEY, "tok-a", mode) and _bucket_lock.holder(s3, "b", KEY, 900)["age"] == 0
    assert not _bucket_lock.release(s3, "b", KEY, "tok-b") and _bucket_lock.holder(s3, "b", KEY, 900)["token"] == "tok-a"
    s3.now += 901
    changed, holder = _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 0, mode)
    assert changed and holder["token"] == "tok-b"
    assert not _bucket_lock.heartbeat(s3, "b", KEY, "tok-a", mode)  # the run that is gone cannot revive its lock
    assert _bucket_lock.release(s3, "b", KEY, "tok-b") and s3.objects == {}


@pytest.mark.parametrize("breaks, survives", [(2, True), (3, False)])
def test_a_read_that_breaks_off_is_read_again(breaks, survives):
    """A heartbeat overwriting the lock while another run reads it: some servers (rclone) cut that read short."""
    s3 = FakeS3(True)
    assert _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, _bucket_lock.CONDITIONAL)[0]
    whole, left = s3.get_object, [breaks]

    def get_object(Bucket, Key):  # noqa: N803
        if left[0]:
            left[0] -= 1
            raise ProtocolError("Connection broken: IncompleteRead(120 bytes read, 37 more expected)")
        return whole(Bucket=Bucket, Key=Key)
    s3.get_object = get_object
    if survives:
        assert _bucket_lock.holder(s3, "b", KEY, 900)["token"] == "tok-a"
    else:
        with pytest.raises(ProtocolError):
            _bucket_lock.holder(s3, "b", KEY, 900)


def test_bounded_wait_pauses_then_names_the_holder():
    s3 = FakeS3(True)
    _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, _bucket_lock.CONDITIONAL)
    now, pauses = [0.0], []

    def pause(seconds):
        pauses.append(seconds)
        now[0] += seconds

    changed, holder = _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 5.0, _bucket_lock.CONDITIONAL,
                                           clock=lambda: now[0], pause=pause, interval=2.0)
    assert not changed and holder["token"] == "tok-a" and sum(pauses) == pytest.approx(5.0)


@pytest.mark.parametrize("tokens", [("tok-a", "tok-b"), ("tok-b", "tok-a")])
def test_bakery_a_taker_that_was_choosing_is_waited_for(tokens):
    """A lists (no claim yet) and stops before writing its numbered claim; B then claims number 1 too. B must wait for A
    to finish choosing rather than win at once; then the lower token wins and exactly one holds the lock."""
    s3 = FakeS3(False)
    first, second = tokens
    a_paused, b_waiting = threading.Event(), threading.Event()

    def before_put(key):
        if threading.current_thread().name == "A" and key.endswith("-" + first) and "choosing" not in key:
            a_paused.set()
            assert b_waiting.wait(30), "B never waited for A"

    s3.before_put = before_put
    results = {}

    def take(token, name):
        def pause(_seconds):
            if name == "B":
                b_waiting.set()
            threading.Event().wait(0.01)
        results[name] = _bucket_lock._acquire_claims(s3, "b", KEY, record(token), 900, pause)  # pylint: disable=protected-access

    thread_a = threading.Thread(target=take, args=(first, "A"), name="A")
    thread_a.start()
    assert a_paused.wait(30)
    thread_b = threading.Thread(target=take, args=(second, "B"), name="B")
    thread_b.start()
    for thread in (thread_a, thread_b):
        thread.join(60)
    winners = [name for name, (taken, _holder) in results.items() if taken]
    assert len(winners) == 1, results
    assert results[winners[0]][1]["token"] == min(tokens)
    assert [c["token"] for c in _bucket_lock.list_claims(s3, "b", KEY)] == [min(tokens)]


def test_conditional_taker_sees_a_claims_lock_and_the_reverse():
    s3 = FakeS3(True)
    _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, _bucket_lock.CLAIMS)
    assert _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 0, _bucket_lock.CONDITIONAL)[1]["token"] == "tok-a"
    _bucket_lock.release(s3, "b", KEY, "tok-a")
    _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, _bucket_lock.CONDITIONAL)
    assert _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 0, _bucket_lock.CLAIMS)[1]["token"] == "tok-a"
    assert _bucket_lock.release(s3, "b", KEY, "tok-a") and s3.objects == {}


def test_beat_due_follows_the_stamp(tmp_path):
    stamp = str(tmp_path / "web01.lock.bucket-beat")
    assert _run_lock.beat_due(stamp, 60)
    _run_lock.stamp_beat(stamp)
    assert not _run_lock.beat_due(stamp, 60)
    assert _run_lock.beat_due(stamp, 60, clock=lambda: time.time() + 61)


def test_a_claim_older_than_half_the_stale_age_is_lost_not_refreshed():
    """Read-then-write cannot be atomic without conditional writes: a claim a taker may be removing is never written back."""
    s3 = FakeS3(False)
    assert _bucket_lock.acquire(s3, "b", KEY, record("tok-a"), 900, 0, _bucket_lock.CLAIMS)[0]
    s3.now += 449
    assert _bucket_lock.heartbeat(s3, "b", KEY, "tok-a", _bucket_lock.CLAIMS, stale_after=900)  # a slow beat is still one
    s3.now += 451
    claims_before = dict(s3.objects)
    assert not _bucket_lock.heartbeat(s3, "b", KEY, "tok-a", _bucket_lock.CLAIMS, stale_after=900)
    assert s3.objects == claims_before  # nothing written: the claim ages on, and a taker removes it at 900 s
    s3.now += 450
    changed, holder = _bucket_lock.acquire(s3, "b", KEY, record("tok-b"), 900, 0, _bucket_lock.CLAIMS)
    assert changed and holder["token"] == "tok-b"
