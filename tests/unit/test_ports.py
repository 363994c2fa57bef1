"""Free ports: under pytest-xdist every worker picks from a slice of its own, never one that is taken."""

from __future__ import annotations

import socket

import pytest

from tests.peers import ports


@pytest.fixture
def as_worker(monkeypatch):
    """``as_worker(n)``: this process picks ports as xdist worker gw<n> would (with a fresh cursor)."""
    monkeypatch.setattr(ports, "_cursor", {})

    def become(index):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw%d" % index)
        ports._cursor.clear()
    return become


def slice_of(index):
    low, high = ports._WORKER_PORTS
    size = (high - low) // ports._WORKER_SLICES
    return range(low + index * size, low + (index + 1) * size)


def test_workers_pick_from_disjoint_slices_below_the_ephemeral_range(as_worker):
    picked = {}
    for index in (0, 1, 2, 3):
        as_worker(index)
        picked[index] = [ports.free_port() for _unused in range(20)]
        assert all(port in slice_of(index) for port in picked[index]), picked[index]
        assert len(set(picked[index])) == 20  # never the same port twice in a row of picks
    assert max(slice_of(ports._WORKER_SLICES - 1)) < 32768


def test_a_worker_beyond_the_slices_is_refused_not_given_another_workers_ports(as_worker):
    as_worker(ports._WORKER_SLICES)
    with pytest.raises(RuntimeError, match="sliced for %d workers at most" % ports._WORKER_SLICES):
        ports.free_port()


def test_a_taken_port_is_skipped(as_worker):
    as_worker(2)
    first = slice_of(2)[0]
    ports._cursor["127.0.0.1"] = 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", first))
        held.listen()
        assert ports.free_port() == first + 1


def test_outside_xdist_the_kernel_picks(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    port = ports.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # free: binding it works
