"""StreamedUpload's scheduling, pure logic: which parts go when, from memory, and the limits it guards (a stand-in client records the calls)."""

from __future__ import annotations

import hashlib
import threading

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._stream_upload import PartsDiffer, StreamedUpload, multipart_etag

MIB = 1024 * 1024


class Recorder:
    """Answers like S3 with MD5 ETags, keeps the parts it was sent and can hold them back (to see the memory bound)."""

    def __init__(self, corrupt=False, replaced=None):
        self.parts = {}
        self.order = []
        self.corrupt = corrupt  # assemble the object from other bytes than the parts sent
        self.replaced = replaced  # a part number whose stored bytes are replaced before completion
        self.gate = threading.Event()
        self.gate.set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    def create_multipart_upload(self, **_kwargs):
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber, Body, **_kwargs):  # noqa: N803 - the SDK's argument names
        with self.lock:
            self.in_flight += len(Body)
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.gate.wait(10)
        with self.lock:
            self.in_flight -= len(Body)
        self.order.append(PartNumber)
        self.parts[PartNumber] = Body
        return {"ETag": '"%s"' % hashlib.md5(Body).hexdigest()}  # nosec - test data

    def list_parts(self, **_kwargs):
        parts = []
        for number, body in sorted(self.parts.items()):
            if number == self.replaced:
                body = b"y" * len(body)
            parts.append({"PartNumber": number, "Size": len(body), "ETag": '"%s"' % hashlib.md5(body).hexdigest()})  # nosec - test data
        return {"Parts": parts, "IsTruncated": False}

    def complete_multipart_upload(self, MultipartUpload, **_kwargs):  # noqa: N803
        md5s = [part["ETag"].strip('"') for part in MultipartUpload["Parts"]]
        if self.corrupt:
            md5s[0] = hashlib.md5(b"other bytes").hexdigest()  # nosec - test data
        return {"ETag": '"%s"' % multipart_etag(md5s)}

    def abort_multipart_upload(self, **_kwargs):
        pass


def data(size):
    return bytes(range(256)) * (size // 256)


def streamed(part_size=5 * MIB, front=0, concurrency=2, **kwargs):
    client = Recorder(**{k: kwargs.pop(k) for k in ("corrupt", "replaced") if k in kwargs})
    return client, StreamedUpload(client, "b", "k", part_size, concurrency, {}, front=front, **kwargs)


def test_whole_parts_go_as_they_become_whole_and_part_one_last():
    client, upload = streamed()
    body = data(17 * MIB)
    try:
        upload.write(body[:9 * MIB])  # part 2 ends at 10 MiB: not whole yet, and part 1 waits for the end
        assert client.parts == {} and upload.upload_id is None
        upload.write(body[9 * MIB:])
        upload.pwrite(b"front", 0)
        assert upload.send_rest(17 * MIB) is True
        md5s = upload.complete()
    finally:
        upload.close(abort=False)
    assert client.order[-1] == 1 and sorted(client.parts) == [1, 2, 3, 4]
    assert b"".join(client.parts[n] for n in (1, 2, 3, 4)) == b"front" + body[5:], "the parts are the file, the front rewritten"
    assert upload.part_ranges() == [(1, 0, 5 * MIB), (2, 5 * MIB, 5 * MIB), (3, 10 * MIB, 5 * MIB), (4, 15 * MIB, 2 * MIB)]
    assert len(md5s) == 4 and multipart_etag(md5s).endswith("-4")


def test_one_part_is_left_to_a_single_put():
    client, upload = streamed()
    upload.write(data(3 * MIB))
    try:
        assert upload.send_rest(3 * MIB) is False and client.parts == {} and upload.upload_id is None
        assert upload.front_bytes(3 * MIB) == data(3 * MIB)
    finally:
        upload.close(abort=True)


def test_part_one_is_the_whole_front_and_only_it_is_rewritten():
    client, upload = streamed(front=7 * MIB)
    upload.write(data(20 * MIB))
    with pytest.raises(ValueError, match="only part 1"):
        upload.pwrite(b"x" * 10, 7 * MIB - 5)
    try:
        upload.send_rest(20 * MIB)
        upload.complete()
    finally:
        upload.close(abort=False)
    assert len(client.parts[1]) == 7 * MIB and len(client.parts[2]) == 5 * MIB


def test_parts_in_flight_stay_within_the_memory_budget():
    client, upload = streamed(concurrency=8, memory_budget=10 * MIB)
    client.gate.clear()
    releaser = threading.Timer(0.5, client.gate.set)
    releaser.start()
    try:
        upload.write(data(60 * MIB))  # waits for parts to be sent rather than holding 11 of them
        upload.send_rest(60 * MIB)
        upload.complete()
    finally:
        releaser.cancel()
        client.gate.set()
        upload.close(abort=False)
    assert client.most_in_flight <= 10 * MIB and len(client.parts) == 12


def test_resume_keeps_matching_parts_and_stops_at_one_that_differs():
    body = data(16 * MIB)
    listed = {2: {"size": 5 * MIB, "etag": hashlib.md5(body[5 * MIB:10 * MIB]).hexdigest()}}  # nosec - test data
    client, upload = streamed(resume=("u0", listed))
    client.parts[2] = body[5 * MIB:10 * MIB]  # stored by the interrupted run
    try:
        upload.write(body)
        upload.send_rest(16 * MIB)
        upload.complete()
    finally:
        upload.close(abort=False)
    assert upload.kept == {2: listed[2]["etag"]} and sorted(client.order) == [1, 3, 4]

    other = {2: {"size": 5 * MIB, "etag": hashlib.md5(b"other").hexdigest()}}  # nosec - test data
    _client, upload = streamed(resume=("u0", other))
    try:
        with pytest.raises(PartsDiffer):
            upload.write(body)
    finally:
        upload.close(abort=False)


def test_more_than_ten_thousand_parts_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_multipart, "MAX_PARTS", 3)
    _client, upload = streamed()
    try:
        with pytest.raises(ReplicationError, match="outgrew 3 parts of 5242880 bytes; raise part_size_mb"):
            upload.write(data(25 * MIB))
    finally:
        upload.close(abort=True)


def test_a_part_replaced_before_completion_is_caught():
    _client, upload = streamed(replaced=3)
    try:
        upload.write(data(12 * MIB))
        upload.send_rest(12 * MIB)
        with pytest.raises(ReplicationError, match=r"s3://b/k: part 3 stored on the endpoint \(2097152 bytes, ETag [0-9a-f]+\) is not the part sent"):
            upload.complete()
    finally:
        upload.close(abort=True)


def test_an_object_assembled_from_other_bytes_is_caught():
    _client, upload = streamed(corrupt=True)
    try:
        upload.write(data(12 * MIB))
        upload.send_rest(12 * MIB)
        with pytest.raises(ReplicationError, match="the endpoint completed it with ETag .*-3, the parts sent make"):
            upload.complete()
    finally:
        upload.close(abort=True)
