"""Fail a node: its pods stop answering, as on a kernel lock-up or a lost kubelet.

The target does it (:meth:`~..targets.base.FaultPrimitives.node_failure`): the local
target pauses every pod on the node (SIGSTOP, so they hold their sockets and answer
nothing, which is what clients of a NodeNotReady node see); Kubernetes cordons the node
and drains it through the Eviction API. The undo resumes or uncordons.
"""

from __future__ import annotations

from typing import Any

from ..errors import FaultError, SelectorMatchedNothing
from .base import FaultContext, TargetFault

__all__ = ["NodeFailure"]


class NodeFailure(TargetFault):
    kind = "node_failure"

    def __init__(self, node: str) -> None:
        if not node or not isinstance(node, str):
            raise FaultError(f"node_failure needs a node name, got {node!r}")
        self.node = node

    def describe(self) -> str:
        return f"fail node {self.node!r}"

    def plan(self) -> dict[str, Any]:
        return {"node": self.node}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        known = [n.name for n in ctx.target.nodes()]
        if self.node not in known:
            raise SelectorMatchedNothing(
                f"node_failure: no node named {self.node!r}; the target has {known}"
            )
        ctx.target.node_failure(self.node, changes=self.changes)
        return self.spec()
