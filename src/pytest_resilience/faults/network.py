"""Block a pod's, a service's or a port's traffic with real iptables rules.

Scope, on the local target: all pods share the host's loopback, so a block matches
ingress by destination port (the service port and each pod's own port) and egress by the
pod's cgroup v2 path (``-m cgroup --path``): a pod is cut off without touching any other
process on the machine. Per-pod network namespaces were the other option; they would
break the shared service port that keeps a service up while one replica dies.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from ..errors import FaultError, SelectorMatchedNothing
from . import iptables
from .base import Fault, FaultContext, register_reverter

__all__ = ["NetworkBlock"]

Direction = Literal["ingress", "egress", "both"]


class NetworkBlock(Fault):
    kind = "network_block"

    def __init__(
        self,
        selector: str | Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        direction: Direction = "ingress",
        action: Literal["drop", "reject"] = "drop",
    ) -> None:
        if selector is None and port is None:
            raise FaultError("network_block needs a pod selector, a port, or both")
        if direction not in ("ingress", "egress", "both"):
            raise FaultError(
                f"network_block direction must be ingress, egress or both, got {direction!r}"
            )
        if action not in ("drop", "reject"):
            raise FaultError(f"network_block action must be drop or reject, got {action!r}")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise FaultError(f"network_block port must be 1..65535, got {port!r}")
        self.selector = selector
        self.port = port
        self.direction = direction
        self.action = action
        self.chain = f"PYRES-{secrets.token_hex(4)}"
        self.rules: list[iptables.Rule] = []

    def describe(self) -> str:
        what = f"pods {self.selector!r}" if self.selector is not None else "all local traffic"
        port = f" port {self.port}" if self.port else ""
        return f"{self.action} {self.direction} of {what}{port} (iptables chain {self.chain})"

    def plan(self) -> dict[str, Any]:
        return {"chain": self.chain}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        if ctx.target.name == "kubernetes":
            return self._kube_inject(ctx)
        iptables.check_privilege()
        self.rules = self._rules(ctx)
        iptables.install(self.chain, self.rules, action=self.action.upper())
        return {"chain": self.chain, "rules": [" ".join(r.match) for r in self.rules]}

    def revert(self, ctx: FaultContext) -> None:
        if self._kube is not None:
            self._kube_revert(ctx)
            return
        iptables.remove(self.chain)

    def _rules(self, ctx: FaultContext) -> list[iptables.Rule]:
        tcp = ("-p", "tcp")
        if self.port is not None:
            _check_listened(self.port)
        if self.selector is None:
            assert self.port is not None
            return [iptables.Rule("INPUT", ("-i", "lo", *tcp, "--dport", str(self.port)))]
        pods = ctx.target.pods(self.selector)
        if not pods:
            raise SelectorMatchedNothing(
                f"network_block: no pod matches selector {self.selector!r}"
            )
        rules: list[iptables.Rule] = []
        if self.direction in ("ingress", "both"):
            ports = sorted({p for pod in pods for p in pod.ports})
            if self.port is not None:
                ports = [self.port]
            if not ports:
                raise FaultError(
                    f"network_block: pods {self.selector!r} listen on no known port; "
                    "give port= to block ingress"
                )
            rules += [iptables.Rule("INPUT", ("-i", "lo", *tcp, "--dport", str(p))) for p in ports]
        if self.direction in ("egress", "both"):
            for pod in pods:
                if pod.cgroup is None:
                    raise FaultError(
                        f"network_block: pod {pod.name} has no cgroup v2 path, so its egress "
                        "cannot be told apart from other processes; block ingress instead"
                    )
                dport = ("--dport", str(self.port)) if self.port else ()
                match = ("-m", "cgroup", "--path", pod.cgroup, *tcp, *dport)
                rules.append(iptables.Rule("OUTPUT", match))
        return rules

    # -- kubernetes: the target's primitives, through faults/kube_dispatch.py -------------
    _kube: Any = None  # kube_dispatch.KubeChanges once injected on kubernetes

    def _kube_inject(self, ctx: FaultContext) -> dict[str, Any]:
        from . import kube_dispatch

        self._kube = kube_dispatch.KubeChanges(self.ledger_id)
        return kube_dispatch.network_block(
            ctx,
            self._kube,
            selector=self.selector,
            port=self.port,
            direction=self.direction,
            action=self.action,
        )

    def _kube_revert(self, ctx: FaultContext) -> None:
        from . import kube_dispatch

        kube_dispatch.revert(ctx, self._kube)


def _check_listened(port: int) -> None:
    """A block of a port nothing listens on would pass silently and test nothing."""
    listening: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):  # the kernel's own socket tables
        try:
            with open(table) as rows:
                next(rows, None)  # header
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A":  # TCP_LISTEN
                        listening.add(int(fields[1].rpartition(":")[2], 16))
        except OSError:
            continue
    if port not in listening:
        raise FaultError(
            f"network_block: nothing listens on TCP port {port} on this host, so blocking it "
            "would test nothing; give the port of a running service (target.port_of(name))"
        )


@register_reverter(NetworkBlock.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> None:
    from . import kube_dispatch

    if kube_dispatch.handles(spec, ctx):
        kube_dispatch.revert_spec(spec, ctx)
        return
    iptables.remove(spec["chain"])
