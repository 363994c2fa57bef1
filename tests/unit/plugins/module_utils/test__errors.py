# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""ReplicationError.extend_msg: a cleanup's failure joins the first error without replacing it."""

from __future__ import annotations

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError, WaitTimeout


def test_extend_msg_keeps_the_error_its_type_and_details():
    error = WaitTimeout("Failed to snapshot volume v1: timed out", last_state="pending", volume="v1")
    error.extend_msg("Failed to delete snapshot s1: 409")
    error.extend_msg("the object is left", "; but ")
    assert error.msg == "Failed to snapshot volume v1: timed out; Failed to delete snapshot s1: 409; but the object is left"
    assert str(error) == error.msg and error.args == (error.msg,)
    assert isinstance(error, WaitTimeout) and error.last_state == "pending" and error.details["volume"] == "v1"
    with pytest.raises(ReplicationError, match="; but the object is left$"):
        raise error
