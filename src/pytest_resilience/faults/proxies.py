"""Toxiproxy proxies created or deleted as a fault: the revert deletes or re-creates them.

What chaostoolkit-toxiproxy's ``create_proxy`` and ``delete_proxy`` do, held in the
ledger (see :mod:`.toxics` for toxics on a proxy). The server URL and its version reach
the ledger before the request that changes anything, and a deleted proxy's listen
address, upstream and enabled flag before it is deleted, so ``pytest --chaos-cleanup``
after a SIGKILL deletes the created proxy or re-creates the deleted one. An embedded
server that refuses connections died with its run, its proxies with it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ..errors import FaultError
from .base import Fault, FaultContext, register_reverter
from .toxics import EMBEDDED_VERSION_MARK

__all__ = ["ProxyCreate", "ProxyDelete"]

log = logging.getLogger("pytest_resilience.faults")


class _ProxyFault(Fault):
    def __init__(self, proxy: str, *, toxiproxy_url: str) -> None:
        if not isinstance(proxy, str) or not proxy:
            raise FaultError(f"a proxy needs a non-empty name, got {proxy!r}")
        self.proxy = proxy
        self.toxiproxy_url = toxiproxy_url
        self._acted = False

    @property
    def acted(self) -> bool:
        return self._acted

    def plan(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "url": self.toxiproxy_url}


class ProxyCreate(_ProxyFault):
    """A new proxy ``listen`` -> ``upstream``; the revert deletes it."""

    kind: ClassVar[str] = "proxy_create"

    def __init__(
        self, proxy: str, *, listen: str, upstream: str, enabled: bool, toxiproxy_url: str
    ) -> None:
        super().__init__(proxy, toxiproxy_url=toxiproxy_url)
        self.listen, self.upstream, self.enabled = listen, upstream, enabled
        #: the address the server gave it (a listen port 0 gets a real one)
        self.listening: str | None = None

    def describe(self) -> str:
        return f"create proxy {self.proxy!r} {self.listen} -> {self.upstream}"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        from ..toxiproxy.client import ToxiproxyClient

        client = ToxiproxyClient(self.toxiproxy_url)
        self.note({"server_version": client.version()})  # ledger first
        self._acted = True  # before the request: a timed-out create may still land
        info = client.create_proxy(self.proxy, self.listen, self.upstream, enabled=self.enabled)
        self.listening = info.listen
        return {**self.plan(), "listen": info.listen, "upstream": info.upstream}

    def revert(self, ctx: FaultContext) -> None:
        if self._acted:
            _delete(self.toxiproxy_url, self.proxy)


class ProxyDelete(_ProxyFault):
    """Delete an existing proxy (its listener closes, its toxics go); the revert re-creates
    it with the listen address, upstream and enabled flag it had."""

    kind: ClassVar[str] = "proxy_delete"

    def __init__(self, proxy: str, *, toxiproxy_url: str) -> None:
        super().__init__(proxy, toxiproxy_url=toxiproxy_url)
        self.existed: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"delete proxy {self.proxy!r}"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        from ..toxiproxy.client import ToxiproxyClient

        client = ToxiproxyClient(self.toxiproxy_url)
        info = client.get_proxy(self.proxy)
        if info is None:
            return {}  # nothing to delete: chaostoolkit-toxiproxy only logs it, so do we
        self.existed = {"listen": info.listen, "upstream": info.upstream, "enabled": info.enabled}
        self.note({"server_version": client.version(), **self.existed})  # before deleting
        self._acted = True
        client.delete_proxy(self.proxy)
        return {**self.plan(), **self.existed}

    def revert(self, ctx: FaultContext) -> None:
        if self._acted and self.existed is not None:
            _recreate(self.toxiproxy_url, self.proxy, self.existed)


def _delete(url: str, proxy: str) -> None:
    from ..toxiproxy.client import ToxiproxyAPIError, ToxiproxyClient

    try:
        ToxiproxyClient(url).delete_proxy(proxy)
    except ToxiproxyAPIError as exc:
        if exc.status != 404:
            raise
        log.info("proxy %r was already gone (%s)", proxy, exc.error)


def _recreate(url: str, proxy: str, existed: dict[str, Any]) -> None:
    from ..toxiproxy.client import ToxiproxyAPIError, ToxiproxyClient

    try:
        ToxiproxyClient(url).create_proxy(
            proxy,
            str(existed["listen"]),
            str(existed["upstream"]),
            enabled=bool(existed["enabled"]),
        )
    except ToxiproxyAPIError as exc:
        if exc.status != 409:
            raise
        log.info("proxy %r exists again already (%s)", proxy, exc.error)


def _from_ledger(spec: dict[str, Any], undo: Any) -> str | None:
    from ..toxiproxy.client import ToxiproxyUnreachable

    if "server_version" not in spec:
        return "it never acted: its run ended before it sent anything to a Toxiproxy server"
    try:
        undo()
        return None
    except ToxiproxyUnreachable as exc:
        if exc.refused and str(spec["server_version"]).endswith(EMBEDDED_VERSION_MARK):
            return f"the embedded Toxiproxy at {spec['url']} died with its run, proxies and all"
        raise FaultError(
            f"Toxiproxy at {spec['url']} does not answer, so proxy {spec['proxy']!r} may still "
            f"be as the fault left it: {exc}. Restore access to it and run `pytest --chaos-cleanup`"
        ) from exc


@register_reverter(ProxyCreate.kind)
def _revert_create(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    return _from_ledger(spec, lambda: _delete(spec["url"], spec["proxy"]))


@register_reverter(ProxyDelete.kind)
def _revert_delete(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    if "listen" not in spec:
        return "it never acted: the proxy did not exist when its run ended"
    return _from_ledger(spec, lambda: _recreate(spec["url"], spec["proxy"], spec))
