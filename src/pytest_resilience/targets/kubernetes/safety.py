"""Which clusters and namespaces a chaos run may touch, decided before any change is sent.

A chaos tool pointed at the wrong kubeconfig context deletes production pods. So the
Kubernetes target refuses, by default, every context except kind's (``kind-*``) and the
namespaces that keep a cluster alive (kube-system, kube-public, kube-node-lease,
local-path-storage). The rules are checked when the target is built and again before each
call that changes something, so a refusal never leaves half a fault behind.

``--chaos-allow`` syntax (the option may be repeated; values may also be comma-separated):

``context:PATTERN``
    allow kubeconfig contexts matching the glob PATTERN (e.g. ``context:staging-eu``,
    ``context:gke_*``). ``kind-*`` is always allowed unless denied.
``namespace:PATTERN`` (or a bare ``PATTERN``)
    allow namespaces matching PATTERN, including a system namespace named explicitly
    (``namespace:kube-system``). Any other namespace is allowed already.
``!namespace:PATTERN`` (or a bare ``!PATTERN``)
    never touch namespaces matching PATTERN, whatever else allows them.
``!context:PATTERN``
    never touch contexts matching PATTERN (``!context:kind-prod``).

A deny always wins over an allow.

A context's *name* proves nothing: anyone can call a production context ``kind-dev``. So
every refusal names the context's API server URL, and a ``kind-*`` context is allowed by
default only when its server is where kind puts it: a loopback address or ``localhost``
(kind publishes the API server on 127.0.0.1), docker's bridge networks (172.16.0.0/12,
docker's default address pools, where ``kind get kubeconfig --internal`` and CI runners in
containers reach it), ``host.docker.internal``, or a kind node container name
(``<cluster>-control-plane``). Anywhere else needs ``--chaos-allow context:NAME`` (any
allow rule the user wrote, ``context:kind-*`` included). The server is read from the
kubeconfig (:func:`.api.connect`), so this is decided before any request is sent.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import ConfigError, NotAllowed

__all__ = ["DEFAULT_CONTEXTS", "SYSTEM_NAMESPACES", "ChaosPolicy", "is_kind_server"]

DEFAULT_CONTEXTS: tuple[str, ...] = ("kind-*",)
SYSTEM_NAMESPACES: tuple[str, ...] = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
)


@dataclass(frozen=True)
class ChaosPolicy:
    """Parsed ``--chaos-allow`` rules; ``check_*`` raise :class:`NotAllowed` with the fix."""

    allow_contexts: tuple[str, ...] = DEFAULT_CONTEXTS
    deny_contexts: tuple[str, ...] = ()
    allow_namespaces: tuple[str, ...] = ()
    deny_namespaces: tuple[str, ...] = ()
    #: the context patterns the user allowed (``--chaos-allow context:...``), defaults aside
    explicit_contexts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, values: Iterable[str] | str | None = ()) -> ChaosPolicy:
        """Build a policy from ``--chaos-allow`` values; a malformed rule is a ConfigError."""
        if isinstance(values, str):
            values = [values]
        allow_ctx, deny_ctx = list(DEFAULT_CONTEXTS), list[str]()
        allow_ns, deny_ns = list[str](), list[str]()
        for raw in values or ():
            for term in filter(None, (t.strip() for t in raw.split(","))):
                negate = term.startswith("!")
                body = term[1:].strip() if negate else term
                kind, sep, pattern = body.partition(":")
                if not sep:
                    kind, pattern = "namespace", body
                kind, pattern = kind.strip(), pattern.strip()
                if kind not in ("context", "namespace") or not pattern:
                    raise ConfigError(
                        f"bad rule {term!r}: use context:NAME, namespace:NAME, NAME, "
                        "!namespace:NAME, !NAME or !context:NAME",
                        field="--chaos-allow",
                    )
                target = {
                    ("context", False): allow_ctx,
                    ("context", True): deny_ctx,
                    ("namespace", False): allow_ns,
                    ("namespace", True): deny_ns,
                }[(kind, negate)]
                target.append(pattern)
        explicit = tuple(allow_ctx[len(DEFAULT_CONTEXTS) :])
        return cls(tuple(allow_ctx), tuple(deny_ctx), tuple(allow_ns), tuple(deny_ns), explicit)

    def check_context(self, context: str, *, server: str | None = None) -> None:
        """Refuse a context that is denied, not allowed, or a ``kind-*`` name on a server
        that is not kind's. ``server`` defaults to the one a :class:`.api.ContextName`
        carries."""
        if server is None:
            server = getattr(context, "server", None)
        name = str(context)
        where = f" (API server {server})" if server else ""
        if _matches(name, self.deny_contexts):
            raise NotAllowed(
                f"kube context {name!r}{where} is denied by --chaos-allow '!context:...'; "
                "remove that rule to run chaos against it"
            )
        if not _matches(name, self.allow_contexts):
            raise NotAllowed(
                f"kube context {name!r}{where} is not allowed for chaos (allowed: "
                f"{', '.join(self.allow_contexts)}); if this cluster is meant to be broken, "
                f"pass --chaos-allow context:{name}"
            )
        if server and not _matches(name, self.explicit_contexts) and not is_kind_server(server):
            raise NotAllowed(
                f"kube context {name!r} is named like a kind cluster, but its API server "
                f"{server} is not on this machine or a docker network (kind serves on "
                "127.0.0.1); the name alone does not make it a throwaway cluster. If it is "
                f"meant to be broken, pass --chaos-allow context:{name}"
            )

    def check_namespace(self, namespace: str) -> None:
        if _matches(namespace, self.deny_namespaces):
            raise NotAllowed(
                f"namespace {namespace!r} is denied by --chaos-allow '!{namespace}'; "
                "remove that rule to run chaos in it"
            )
        if namespace in SYSTEM_NAMESPACES and not _matches(namespace, self.allow_namespaces):
            raise NotAllowed(
                f"namespace {namespace!r} is a system namespace and is never touched by default; "
                f"pass --chaos-allow namespace:{namespace} if you really mean it"
            )


_DOCKER_NETWORKS = (ipaddress.ip_network("172.16.0.0/12"),)


def is_kind_server(server: str) -> bool:
    """Whether an API server URL is where a kind cluster's would be (see module docs)."""
    host = (urlsplit(server if "//" in server else f"//{server}").hostname or "").lower()
    if host in ("localhost", "host.docker.internal") or host.endswith(".localhost"):
        return True
    if host.endswith("-control-plane"):  # a kind node container on the docker network
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or any(ip in net for net in _DOCKER_NETWORKS)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
