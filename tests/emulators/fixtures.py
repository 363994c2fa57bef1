# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""pytest fixtures for the VPC emulator subprocess: import them into a conftest or a test module
(``from tests.emulators.fixtures import vpc_emulator, vpc_emulator_factory``)."""

import pytest

from tests.emulators.vpc_control import start

API_KEY = "vpc-emulator-api-key"


def _dirs(base):
    (base / "data").mkdir()
    (base / "by-id").mkdir()
    return str(base / "data"), str(base / "by-id")


@pytest.fixture(scope="session")
def vpc_emulator(tmp_path_factory):
    """A session VPC emulator subprocess (us-south, eu-de) with volume files and a by-id dir.

    Stopping it (SIGTERM) frees its loop devices and links; stop() fails the run when some are left.
    """
    data, by_id = _dirs(tmp_path_factory.mktemp("vpc-emulator"))
    server = start(API_KEY, data_dir=data, by_id_dir=by_id, delay=0.2)
    server.api_key_for_tests, server.by_id_path, server.data_path = API_KEY, by_id, data
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vpc_emulator_factory(tmp_path):
    """``make(**options)``: a fresh emulator subprocess for one test (options: delay, token_seconds, regions, ...)."""
    started = []

    def make(api_key=API_KEY, **options):
        base = tmp_path / ("vpc-emulator-%d" % len(started))
        base.mkdir()
        data, by_id = _dirs(base)
        server = start(api_key, data_dir=data, by_id_dir=by_id, **options)
        server.api_key_for_tests, server.by_id_path, server.data_path = api_key, by_id, data
        started.append(server)
        return server
    try:
        yield make
    finally:
        failures = []
        for server in started:  # each one stopped, whatever the one before raised
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 pylint: disable=broad-except
                failures.append(exc)  # reported below, once the others are stopped
        if failures:
            raise failures[0]


_OPENSTACK = {}


@pytest.fixture(scope="session")
def openstack_emulator(request, openstack_cloud, tmp_path_factory):
    """Cinder and Nova emulated (tests/emulators/openstack_server.py) behind the session's real Keystone, in RegionOne's
    catalog. One per test session however many modules import this fixture (a second one would register a second pair
    of endpoints in the same catalog); tests call ``reset()`` first. Its conversion-host attachments are loop devices (root)."""
    from tests.emulators import openstack_server  # pylint: disable=import-outside-toplevel

    if "emulator" not in _OPENSTACK:
        data, by_id = _dirs(tmp_path_factory.mktemp("openstack-emulator"))
        emulator = openstack_server.start(openstack_cloud.auth_url, data, by_id, glance_url=openstack_cloud.glance_url("RegionOne"))
        conn = openstack_cloud.connect("RegionOne")
        try:
            emulator.register(conn, ["RegionOne"])
        finally:
            conn.close()

        def finish():
            _OPENSTACK.pop("emulator", None)
            emulator.stop()
            left = emulator.leftovers()
            assert left == {"loops": [], "links": []}, "the OpenStack emulator left attachments: %s" % left
        request.addfinalizer(finish)
        _OPENSTACK["emulator"] = emulator
    return _OPENSTACK["emulator"]
