# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A cancelled PowerVS import follows the job it cannot stop to its end and deletes the image it made, through errors."""

from __future__ import annotations

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _powervs


class FlakyWorkspace:
    """A PowerVS client whose job ends after ``polls`` probes; the calls listed in ``failures`` fail once each first."""

    def __init__(self, polls, failures=()):
        self.polls, self.failures = polls, list(failures)
        self.probes = 0
        self.images_left = {"img-1": {"imageID": "img-1", "name": "web-20261129-065619", "state": "active"},
                            "img-2": {"imageID": "img-2", "name": "web-20261101-000000", "state": "active"}}

    def _maybe_fail(self, call):
        if call in self.failures:
            self.failures.remove(call)
            raise ConnectionRefusedError("connection refused during %s" % call)

    def job(self, _job_id):
        self._maybe_fail("job")
        self.probes += 1
        return {"status": {"state": "completed" if self.probes >= self.polls else "running"}}

    def images(self):
        self._maybe_fail("images")
        return list(self.images_left.values())

    def delete_image(self, image_id):
        self._maybe_fail("delete")
        del self.images_left[image_id]


def _target(client, wait_timeout=30):
    target = _powervs.Target({"server": "web", "powervs": {"workspace_id": "ws"}, "wait_timeout": wait_timeout, "wait_sleep": 0.01})
    target._client = client  # pylint: disable=protected-access
    target._job_id = "job-1"  # pylint: disable=protected-access
    return target


@pytest.mark.parametrize("failures", [(), ("job", "job"), ("images",), ("delete",), ("job", "images", "delete")])
def test_the_follower_outlasts_transient_errors_and_deletes_only_the_image_it_made(failures):
    client = FlakyWorkspace(polls=3, failures=failures)
    _target(client)._abandon_import({"name": "web-20261129-065619"})  # pylint: disable=protected-access
    assert client.probes == 3  # it followed the job to its end
    assert list(client.images_left) == ["img-2"]  # the older image, not this import's, stays


def test_past_its_deadline_the_follower_reports_what_it_could_not_delete():
    client = FlakyWorkspace(polls=1, failures=["delete"] * 1000)
    with pytest.raises(OSError, match="connection refused during delete"):
        _target(client, wait_timeout=0.05)._abandon_import({"name": "web-20261129-065619"})  # pylint: disable=protected-access
    assert "img-1" in client.images_left
