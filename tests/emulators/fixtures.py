# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""pytest fixtures for the VPC emulator: import them into a conftest (``from tests.emulators.fixtures import vpc_emulator``)."""

import pytest

from tests.emulators.vpc_server import start

API_KEY = "vpc-emulator-api-key"


@pytest.fixture(scope="session")
def vpc_emulator(tmp_path_factory):
    """A session VPC emulator (us-south, eu-de) with volume files and a by-id dir; stop() frees loop devices and links."""
    base = tmp_path_factory.mktemp("vpc-emulator")
    (base / "data").mkdir()
    (base / "by-id").mkdir()
    server = start(API_KEY, data_dir=str(base / "data"), by_id_dir=str(base / "by-id"))
    server.api_key_for_tests = API_KEY
    server.by_id_path = str(base / "by-id")
    try:
        yield server
    finally:
        server.stop()
