"""Toxiproxy for chaos tests: an embedded API-compatible server and the one client wrapper.

Names are loaded on first use, so importing this package costs nothing until a toxiproxy fault
is actually wanted (the server pulls in aiohttp, the client requests and toxiproxy-python).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_resilience.toxiproxy.client import (
        ProxyInfo,
        ToxicInfo,
        ToxiproxyAPIError,
        ToxiproxyClient,
        ToxiproxyUnreachable,
    )
    from pytest_resilience.toxiproxy.embedded import EmbeddedToxiproxy
    from pytest_resilience.toxiproxy.resolve import ToxiproxyServerHandle, resolve_server
    from pytest_resilience.toxiproxy.server import ToxiproxyServer
    from pytest_resilience.toxiproxy.toxics import TOXIC_ATTRIBUTES

__all__ = [
    "TOXIC_ATTRIBUTES",
    "EmbeddedToxiproxy",
    "ProxyInfo",
    "ToxicInfo",
    "ToxiproxyAPIError",
    "ToxiproxyClient",
    "ToxiproxyServer",
    "ToxiproxyServerHandle",
    "ToxiproxyUnreachable",
    "resolve_server",
]

_HOMES = {
    "TOXIC_ATTRIBUTES": "toxics",
    "EmbeddedToxiproxy": "embedded",
    "ProxyInfo": "client",
    "ToxicInfo": "client",
    "ToxiproxyAPIError": "client",
    "ToxiproxyClient": "client",
    "ToxiproxyServer": "server",
    "ToxiproxyServerHandle": "resolve",
    "ToxiproxyUnreachable": "client",
    "resolve_server": "resolve",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
