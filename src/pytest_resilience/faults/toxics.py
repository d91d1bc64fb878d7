"""Network faults through Toxiproxy: latency, bandwidth, timeouts, resets, a proxy taken down.

Each fault acts on the Toxiproxy proxy named after the dependency ("postgres", "redis"), so
only the traffic that goes through that proxy is hurt: the service under test keeps its other
connections, and nothing needs root. The server comes from the target's
:class:`~..targets.base.DependencyProxies` capability: the local target routes proxied
services through its embedded server, on Kubernetes it is ``--toxiproxy-url``.

Every toxic gets a unique name (``pyres-<hex>``) before anything is sent, and the ledger holds
proxy, toxic name, server URL and version *before* the first request that changes anything,
so a run killed with SIGKILL is undone from the ledger alone: remove that toxic (already gone
is fine) or enable that proxy again. An entry without a server version was killed before it
sent anything, and an embedded server that refuses connections died with its run, toxics and
all: either way the cleanup closes the entry and says why.

The HTTP client (requests, toxiproxy-python) is imported only when a fault acts, so importing
this module to register its reverters costs next to nothing.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import ConfigError, FaultError, SelectorMatchedNothing
from ..targets.base import DependencyProxies, Target
from ..toxiproxy.toxics import check_toxic
from .base import Fault, FaultContext, register_reverter

if TYPE_CHECKING:
    from ..toxiproxy.client import ToxiproxyClient

__all__ = ["Latency", "ProxyDown", "Toxic"]

log = logging.getLogger("pytest_resilience.faults")

Stream = Literal["upstream", "downstream"]

#: The embedded server's version suffix; a refused connection to it means it died with its run.
EMBEDDED_VERSION_MARK = "+pytest-resilience"

HOW_TO_GET_A_SERVER = (
    "give a Toxiproxy server with --toxiproxy-url http://host:8474 (one whose proxies carry the "
    "dependency's traffic), or, on the local target, declare the dependency service with "
    "`proxied: true` so the embedded Toxiproxy routes it through a proxy named after it"
)


class _ToxiproxyFault(Fault):
    """What the Toxiproxy faults share: the proxy name, the server, the checks."""

    def __init__(self, proxy: str, *, toxiproxy_url: str | None) -> None:
        if not isinstance(proxy, str) or not proxy:
            raise ConfigError(f"proxy must be a non-empty proxy name, got {proxy!r}", field="proxy")
        self.proxy = proxy
        #: Explicit server; otherwise read from the target when the fault acts.
        self.toxiproxy_url = toxiproxy_url
        #: The server a mutating request was sent to (None: nothing to undo).
        self._acted_on: str | None = None

    def plan(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"proxy": self.proxy}
        if self.toxiproxy_url:
            spec["url"] = self.toxiproxy_url
        return spec

    @property
    def acted(self) -> bool:
        return self._acted_on is not None

    def _connect(self, ctx: FaultContext) -> ToxiproxyClient:
        """The client for this fault's server; FaultError saying how to get one if none."""
        url = self.toxiproxy_url or _target_server(ctx.target)
        if not url:
            raise FaultError(
                f"{self.kind} on proxy {self.proxy!r} needs a Toxiproxy server and target "
                f"{ctx.target.name!r} has none: {HOW_TO_GET_A_SERVER}"
            )
        from ..toxiproxy.client import ToxiproxyClient

        return ToxiproxyClient(url)

    def _check_proxy(self, client: ToxiproxyClient) -> bool:
        """The proxy's enabled flag; SelectorMatchedNothing naming the proxies that exist."""
        info = client.get_proxy(self.proxy)
        if info is None:
            existing = sorted(client.proxies())
            raise SelectorMatchedNothing(
                f"{self.kind}: Toxiproxy at {client.url} has no proxy {self.proxy!r}; "
                f"proxies there: {', '.join(existing) or '(none)'}"
            )
        return info.enabled

    def _server_spec(self, client: ToxiproxyClient) -> dict[str, Any]:
        version = client.version()
        return {"url": client.url, "server_version": version}


class Toxic(_ToxiproxyFault):
    """Any Toxiproxy toxic on one proxy: bandwidth, timeout, reset_peer, slow_close, ...

    ``attributes`` are the toxic's own (``rate=100`` for bandwidth, ``timeout=0`` to hold
    connections forever); type and attribute names are checked against the Toxiproxy v2 table
    here, at construction, because the server silently ignores unknown attributes.
    """

    kind: ClassVar[str] = "toxic"

    def __init__(
        self,
        proxy: str,
        type: str,  # the Toxiproxy API's own field name
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        toxiproxy_url: str | None = None,
        **attributes: int,
    ) -> None:
        super().__init__(proxy, toxiproxy_url=toxiproxy_url)
        check_toxic(type, stream, toxicity, attributes)
        self.type = type
        self.stream = stream
        self.toxicity = toxicity
        self.attributes = dict(attributes)
        self.toxic_name = f"pyres-{secrets.token_hex(4)}"

    def describe(self) -> str:
        attrs = " ".join(f"{k}={v}" for k, v in self.attributes.items())
        return (
            f"{self.type}{' ' + attrs if attrs else ''} {self.stream} on proxy {self.proxy!r} "
            f"(toxicity {self.toxicity:g})"
        )

    def plan(self) -> dict[str, Any]:
        return {**super().plan(), "toxic": self.toxic_name, "type": self.type}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        client = self._connect(ctx)
        self._check_proxy(client)
        spec = self._server_spec(client)
        self.note(spec)  # ledger first: the server is named before anything is sent to it
        self._acted_on = client.url  # before the request: a timed-out add may still land
        client.add_toxic(
            self.proxy,
            self.type,
            stream=self.stream,
            toxicity=self.toxicity,
            name=self.toxic_name,
            **self.attributes,
        )
        return {**spec, "proxy": self.proxy, "toxic": self.toxic_name}

    def revert(self, ctx: FaultContext) -> None:
        if self._acted_on is None:  # inject stopped before adding anything
            return
        from ..toxiproxy.client import ToxiproxyClient

        _remove_toxic(ToxiproxyClient(self._acted_on), self.proxy, self.toxic_name)


class Latency(Toxic):
    """Delay every chunk on the proxy by ``ms`` (± ``jitter_ms``); the contract's ``latency``."""

    kind: ClassVar[str] = "latency"

    def __init__(
        self,
        proxy: str,
        *,
        ms: int,
        jitter_ms: int = 0,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        toxiproxy_url: str | None = None,
    ) -> None:
        super().__init__(
            proxy,
            "latency",
            stream=stream,
            toxicity=toxicity,
            toxiproxy_url=toxiproxy_url,
            latency=_whole_ms(ms, "ms"),
            jitter=_whole_ms(jitter_ms, "jitter_ms"),
        )
        self.ms = self.attributes["latency"]
        self.jitter_ms = self.attributes["jitter"]

    def describe(self) -> str:
        return (
            f"latency {self.ms}±{self.jitter_ms} ms {self.stream} on proxy {self.proxy!r} "
            f"(toxicity {self.toxicity:g})"
        )


class ProxyDown(_ToxiproxyFault):
    """Take the proxy down: new connections are refused and open ones are closed.

    If the proxy was already down (another fault holds it), revert leaves it down, so nested
    faults undo in the right order.
    """

    kind: ClassVar[str] = "proxy_down"

    def __init__(self, proxy: str, *, toxiproxy_url: str | None = None) -> None:
        super().__init__(proxy, toxiproxy_url=toxiproxy_url)
        self.was_enabled: bool | None = None

    def describe(self) -> str:
        return f"proxy {self.proxy!r} down (connections refused and closed)"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        client = self._connect(ctx)
        self.was_enabled = self._check_proxy(client)
        spec = self._server_spec(client)
        if self.was_enabled:
            self.note({**spec, "was_enabled": True})  # ledger first, as for a toxic
            self._acted_on = client.url
            client.disable(self.proxy)
        return {**spec, "proxy": self.proxy, "was_enabled": self.was_enabled}

    def revert(self, ctx: FaultContext) -> None:
        if self._acted_on is None:  # not disabled by this fault (or it was down already)
            return
        from ..toxiproxy.client import ToxiproxyClient

        _enable(ToxiproxyClient(self._acted_on), self.proxy)


def _whole_ms(value: object, field: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"{field} must be a whole number of milliseconds >= 0, got {value!r}", field=field
        )
    return value


def _remove_toxic(client: ToxiproxyClient, proxy: str, toxic: str) -> None:
    """Remove the toxic; 404 (toxic or proxy gone) means there is nothing left to undo."""
    from ..toxiproxy.client import ToxiproxyAPIError

    try:
        client.remove_toxic(proxy, toxic)
    except ToxiproxyAPIError as exc:
        if exc.status != 404:
            raise
        log.info("toxic %s on proxy %r was already gone (%s)", toxic, proxy, exc.error)


def _enable(client: ToxiproxyClient, proxy: str) -> None:
    from ..toxiproxy.client import ToxiproxyAPIError

    try:
        client.enable(proxy)
    except ToxiproxyAPIError as exc:
        if exc.status != 404:
            raise
        log.info("proxy %r is gone, nothing to enable (%s)", proxy, exc.error)


def _target_server(target: Target) -> str | None:
    return target.toxiproxy_server() if isinstance(target, DependencyProxies) else None


def _undo_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    """Remove the toxic the spec names, or enable its proxy again (a ProxyDown spec)."""
    from ..toxiproxy.client import ToxiproxyClient, ToxiproxyUnreachable

    if "server_version" not in spec:
        # The server and its version reach the ledger before any request that changes
        # something: without them this fault was killed before it sent anything.
        return "it never acted: its run ended before it sent anything to a Toxiproxy server"
    client = ToxiproxyClient(spec["url"])
    toxic = spec.get("toxic")
    undo = f"toxic {toxic}" if toxic else "the disabled proxy"
    try:
        if toxic:
            _remove_toxic(client, spec["proxy"], toxic)
        else:
            _enable(client, spec["proxy"])
        return None
    except ToxiproxyUnreachable as exc:
        # Toxiproxy keeps proxies and toxics in memory only. The embedded server exits with
        # the run that started it, so "refused" there means the fault died with it.
        if exc.refused and str(spec.get("server_version", "")).endswith(EMBEDDED_VERSION_MARK):
            log.info("embedded toxiproxy %s is gone, and %s with it", client.url, undo)
            return (
                f"the embedded Toxiproxy at {client.url} that held {undo} died with its run "
                "(it keeps toxics in memory only)"
            )
        raise FaultError(
            f"Toxiproxy at {client.url} does not answer, so {undo} on proxy {spec['proxy']!r} "
            f"may still be active: {exc}. Restore access to it and run `pytest --chaos-cleanup`"
        ) from exc


@register_reverter(Toxic.kind)
@register_reverter(Latency.kind)
def _revert_toxic_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    return _undo_from_ledger(spec, ctx)


@register_reverter(ProxyDown.kind)
def _revert_proxy_down_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    if spec.get("was_enabled") is False:  # it was down before this fault; leave it so
        return "the proxy was down before this fault, which left it so"
    return _undo_from_ledger(spec, ctx)
