"""Ports chosen before their server binds them stay out of reach of binds to port 0."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from pytest_resilience.ports import free_port


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_free_ports_lie_below_the_ephemeral_range_and_never_repeat():
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert all(port < low for port in ports), [p for p in ports if p >= low]
    assert len(set(ports)) == len(ports)


def test_a_chosen_port_is_never_what_a_server_on_port_0_gets():
    """The main-job flake: a proxy port chosen at start, then Toxiproxy's API on port 0."""
    chosen = {free_port() for _ in range(20)}
    with contextlib.ExitStack() as stack:
        for _ in range(500):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            assert sock.getsockname()[1] not in chosen
