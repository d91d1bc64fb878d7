"""Proxied services are reached through Toxiproxy; the server is resolved the way the
toxiproxy faults expect (given URL, binary on PATH, embedded process)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...errors import ConfigError, FaultError, TargetError

if TYPE_CHECKING:
    from ...toxiproxy.resolve import ToxiproxyServerHandle
    from .state import ServiceState

__all__ = ["ProxyRoutes", "ServiceProxies", "start_proxies"]

log = logging.getLogger("pytest_resilience.targets.local")


@dataclass
class ProxyRoutes:
    """The Toxiproxy server of a local target and the proxies made on it (name -> port)."""

    handle: ToxiproxyServerHandle
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def kind(self) -> str:
        return self.handle.kind

    def close(self) -> None:
        """Stop a server we started; on someone else's server remove only our proxies."""
        if self.handle.kind == "external":
            from ...toxiproxy.client import ToxiproxyClient

            client = ToxiproxyClient(self.handle.url)
            for name in self.ports:
                try:
                    client.delete_proxy(name)
                except FaultError as exc:
                    log.warning("cannot remove proxy %r from %s: %s", name, self.handle.url, exc)
        self.handle.stop()


def start_proxies(url: str | None, routes: Mapping[str, tuple[int, int]]) -> ProxyRoutes:
    """Resolve a Toxiproxy server and create (or replace) one proxy per route.

    ``routes`` maps a proxy name to (listen port, upstream port), both on 127.0.0.1.
    """
    from ...toxiproxy.client import ToxiproxyClient
    from ...toxiproxy.resolve import resolve_server

    try:
        handle = resolve_server(url)
    except FaultError as exc:
        raise TargetError(f"proxied services need a Toxiproxy server: {exc}") from exc
    try:
        ToxiproxyClient(handle.url).populate(
            [
                {
                    "name": name,
                    "listen": f"127.0.0.1:{listen}",
                    "upstream": f"127.0.0.1:{upstream}",
                    "enabled": True,
                }
                for name, (listen, upstream) in routes.items()
            ]
        )
    except (FaultError, ConfigError) as exc:
        handle.stop()
        raise TargetError(
            f"cannot create proxies {', '.join(routes)} on {handle.url}: {exc}"
        ) from exc
    except BaseException:
        handle.stop()
        raise
    log.info(
        "toxiproxy (%s, %s): %s",
        handle.kind,
        handle.url,
        ", ".join(f"{n} :{listen} -> :{up}" for n, (listen, up) in routes.items()),
    )
    return ProxyRoutes(handle, {name: listen for name, (listen, _) in routes.items()})


class ServiceProxies:
    """The proxies in front of one target's ``proxied: true`` services, while it runs."""

    def __init__(self, url_option: str | None) -> None:
        self._url_option = url_option
        self.routes: ProxyRoutes | None = None

    @property
    def url(self) -> str | None:
        return self.routes.url if self.routes is not None else None

    @property
    def kind(self) -> str | None:
        return self.routes.kind if self.routes is not None else None

    def start(self, ports: Mapping[str, int], services: Mapping[str, ServiceState]) -> None:
        """One proxy per service in ``ports`` (name -> listen port), to the service's port."""
        if not ports:
            return
        routes = {}
        for name, listen in ports.items():
            upstream = services[name].port
            assert upstream is not None  # services.py refuses proxied without a port
            routes[name] = (listen, upstream)
        self.routes = start_proxies(self._url_option, routes)

    def stop(self) -> None:
        routes, self.routes = self.routes, None
        if routes is not None:
            routes.close()
