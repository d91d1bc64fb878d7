"""Drain nodes as ``kubectl drain`` does: cordon, move every pod elsewhere; revert uncordons.

Not :mod:`.node`'s ``node_failure``, which on the local target *hangs* a node (its pods
paused in place): a drain is an administrator's planned disruption, the target's own
:meth:`~..targets.base.Target.drain` (Kubernetes: cordon + Eviction API, PodDisruption-
Budgets honoured; local: a replacement elsewhere before each old pod stops). The nodes and
whether each was schedulable before are written to the ledger before the first cordon, so
the revert (and ``pytest --chaos-cleanup`` after a SIGKILL) uncordons exactly the nodes
this fault cordoned, and leaves a node an operator had cordoned before as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import FaultError, SelectorMatchedNothing
from .base import Fault, FaultContext, register_reverter

__all__ = ["NodeDrain"]


class NodeDrain(Fault):
    kind = "node_drain"

    def __init__(self, nodes: Sequence[str]) -> None:
        names = list(dict.fromkeys(nodes))  # once each, in order
        if not names or not all(isinstance(n, str) and n for n in names):
            raise FaultError(f"node_drain needs node names, got {nodes!r}")
        self.nodes = names
        #: node -> schedulable before the drain (only those True are uncordoned)
        self.schedulable: dict[str, bool] = {}

    @property
    def acted(self) -> bool:
        return bool(self.schedulable)

    def describe(self) -> str:
        return f"drain node(s) {', '.join(self.nodes)}"

    def plan(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "schedulable": self.schedulable}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        known = {n.name: n.schedulable for n in ctx.target.nodes()}
        missing = [n for n in self.nodes if n not in known]
        if missing:
            raise SelectorMatchedNothing(
                f"node_drain: no node named {missing[0]!r}; the target has {sorted(known)}"
            )
        self.note({"schedulable": {n: known[n] for n in self.nodes}})  # before any cordon
        self.schedulable = {n: known[n] for n in self.nodes}
        for node in self.nodes:
            ctx.target.drain(node)
        return self.plan()

    def revert(self, ctx: FaultContext) -> None:
        _uncordon(ctx, self.schedulable)


def _uncordon(ctx: FaultContext, schedulable: dict[str, bool]) -> None:
    for node, was_schedulable in schedulable.items():
        if was_schedulable:
            ctx.target.uncordon(node)


@register_reverter(NodeDrain.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    if not spec.get("schedulable"):
        return "it never acted: its run ended before it cordoned anything"
    if not ctx.target.pods_outlive_session:
        return "its nodes died with their session"
    _uncordon(ctx, {str(k): bool(v) for k, v in spec["schedulable"].items()})
    return None
