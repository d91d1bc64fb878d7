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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError, NotAllowed

__all__ = ["DEFAULT_CONTEXTS", "SYSTEM_NAMESPACES", "ChaosPolicy"]

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

    @classmethod
    def parse(cls, values: Iterable[str] | str | None = ()) -> ChaosPolicy:
        """Build a policy from ``--chaos-allow`` values; a malformed rule is a ConfigError."""
        if isinstance(values, str):
            values = [values]
        allow_ctx, deny_ctx = list(DEFAULT_CONTEXTS), []
        allow_ns, deny_ns = [], []
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
        return cls(tuple(allow_ctx), tuple(deny_ctx), tuple(allow_ns), tuple(deny_ns))

    def check_context(self, context: str) -> None:
        if _matches(context, self.deny_contexts):
            raise NotAllowed(
                f"kube context {context!r} is denied by --chaos-allow '!context:...'; "
                "remove that rule to run chaos against it"
            )
        if not _matches(context, self.allow_contexts):
            raise NotAllowed(
                f"kube context {context!r} is not allowed for chaos (allowed: "
                f"{', '.join(self.allow_contexts)}); if this cluster is meant to be broken, "
                f"pass --chaos-allow context:{context}"
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


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
