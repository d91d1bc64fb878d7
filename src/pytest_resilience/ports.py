"""Loopback ports for the servers and pods this package starts."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A loopback port free right now (the OS picks it; we close and hand it on).

    Another process may take it before ours binds it; callers that start servers retry.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
