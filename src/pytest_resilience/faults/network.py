"""Block a pod's, a service's or a port's traffic, for real, on any target.

The fault validates and names the block; the target carries it out
(:meth:`~..targets.base.FaultPrimitives.network_block`): on the local target an iptables
chain scoped by port and cgroup (:mod:`..targets.local.faults`), on Kubernetes an
ephemeral container running iptables in each pod's network namespace
(:mod:`..targets.kubernetes.network_block`). Either way the ledger holds the change records, and the
target's ``undo`` reverts them, also from the ledger alone after SIGKILL.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

from ..errors import FaultError
from .base import FaultContext, TargetFault

__all__ = ["NetworkBlock"]

Direction = Literal["ingress", "egress", "both"]


class NetworkBlock(TargetFault):
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
        #: the block's name (the local target's iptables chain)
        self.chain = f"PYRES-{secrets.token_hex(4)}"

    def describe(self) -> str:
        what = f"pods {self.selector!r}" if self.selector is not None else "all local traffic"
        port = f" port {self.port}" if self.port else ""
        return f"{self.action} {self.direction} of {what}{port} (iptables chain {self.chain})"

    def plan(self) -> dict[str, Any]:
        return {"chain": self.chain}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        ctx.target.network_block(
            self.selector,
            port=self.port,
            direction=self.direction,
            action=self.action,
            name=self.chain,
            changes=self.changes,
        )
        return self.spec()
