"""Loopback ports for the servers and pods this package starts.

A port is chosen before its server binds it (a service's ``{port}`` is templated into its
dependants' commands before anything runs), so something else may take it meanwhile.
The usual thief is a bind to port 0 (the embedded Toxiproxy's own API, Prometheus, an
outgoing connection's source port): the kernel hands those out of its ephemeral range
(``net.ipv4.ip_local_port_range``). So ports are chosen below that range, where no bind
to port 0 lands, and never twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["free_port"]

_LOWEST = 10_000
_handed_out: set[int] = set()
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port free right now, outside the ephemeral range, new to this process.

    Another program may still take it before ours binds it; callers that start servers
    retry. Falls back to the kernel's choice when the ephemeral range leaves no room.
    """
    ceiling = _ephemeral_start()
    with _lock:
        if ceiling - _LOWEST >= 1_000:
            for _ in range(200):
                port = random.randrange(_LOWEST, ceiling)
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port
