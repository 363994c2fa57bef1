"""GrowingUpload's scheduling, pure logic: which parts go when, and the limits it guards (a stand-in client records the calls)."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _multipart
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._stream_upload import GrowingUpload, multipart_etag

MIB = 1024 * 1024


class Recorder:
    """Answers like S3 with MD5 ETags and records the part numbers it was sent."""

    def __init__(self, corrupt=False):
        self.parts = []
        self.corrupt = corrupt  # assemble the object from other bytes than the parts sent

    def create_multipart_upload(self, **_kwargs):
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber, Body, **_kwargs):  # noqa: N803 - the SDK's argument names
        self.parts.append(PartNumber)
        return {"ETag": '"%s"' % hashlib.md5(Body).hexdigest()}  # nosec - test data

    def complete_multipart_upload(self, MultipartUpload, **_kwargs):  # noqa: N803
        md5s = [part["ETag"].strip('"') for part in MultipartUpload["Parts"]]
        if self.corrupt:
            md5s[0] = hashlib.md5(b"other bytes").hexdigest()  # nosec - test data
        return {"ETag": '"%s"' % multipart_etag(md5s)}

    def abort_multipart_upload(self, **_kwargs):
        pass


def growing(tmp_path, size, part_size=5 * MIB, corrupt=False, **kwargs):
    path = tmp_path / "spool"
    path.write_bytes(bytes(range(256)) * (size // 256))
    handle = open(path, "rb")  # noqa: SIM115 - closed by the test's end
    client = Recorder(corrupt)
    return client, GrowingUpload(client, "b", "k", str(path), handle.fileno(), part_size, 2, {}, **kwargs), handle


def test_whole_parts_go_as_they_become_final_and_part_one_last(tmp_path):
    client, upload, handle = growing(tmp_path, 17 * MIB)
    try:
        upload.on_final(9 * MIB)  # part 2 ends at 10 MiB: not final yet, and part 1 waits for the end
        assert client.parts == [] and upload.upload_id is None
        upload.on_final(10 * MIB)
        assert upload.send_rest(17 * MIB) is True
        md5s = upload.complete()
    finally:
        upload.close(abort=False)
        handle.close()
    assert client.parts[-1] == 1 and sorted(client.parts) == [1, 2, 3, 4]
    assert len(md5s) == 4 and multipart_etag(md5s).endswith("-4")


def test_one_part_is_left_to_a_single_put(tmp_path):
    client, upload, handle = growing(tmp_path, 3 * MIB)
    try:
        assert upload.send_rest(3 * MIB) is False and client.parts == [] and upload.upload_id is None
    finally:
        upload.close(abort=True)
        handle.close()


def test_part_one_must_hold_the_front(tmp_path):
    with pytest.raises(ValueError, match="must hold the whole front"):
        growing(tmp_path, MIB, part_size=5 * MIB, front=6 * MIB)


def test_more_than_ten_thousand_parts_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_multipart, "MAX_PARTS", 3)
    _client, upload, handle = growing(tmp_path, 25 * MIB)
    try:
        with pytest.raises(ReplicationError, match="outgrew 3 parts of 5242880 bytes; raise part_size_mb"):
            upload.on_final(25 * MIB)
    finally:
        upload.close(abort=True)
        handle.close()


def test_an_object_assembled_from_other_bytes_is_caught(tmp_path):
    _client, upload, handle = growing(tmp_path, 12 * MIB, corrupt=True)
    try:
        upload.send_rest(12 * MIB)
        with pytest.raises(ReplicationError, match="the endpoint completed it with ETag .*-3, the parts sent make"):
            upload.complete()
    finally:
        upload.close(abort=True)
        handle.close()
