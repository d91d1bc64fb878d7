"""Fail a node: its pods stop answering, as on a kernel lock-up or a lost kubelet.

The target does it (:meth:`~..targets.base.FaultPrimitives.node_failure`): the local
target pauses every pod on the node (SIGSTOP, so they hold their sockets and answer
nothing, which is what clients of a NodeNotReady node see); Kubernetes cordons the node
and drains it through the Eviction API. The undo resumes or uncordons.

``hang=True`` asks for the hang itself on every target (:class:`~..targets.base.NodeOutage`):
a scenario about what notices a NotReady node needs the pods left on it; a target that
cannot hang a node refuses before it changes anything.
"""

from __future__ import annotations

from typing import Any

from ..errors import FaultError, SelectorMatchedNothing
from ..targets.base import NodeOutage
from .base import FaultContext, TargetFault

__all__ = ["NodeFailure"]


class NodeFailure(TargetFault):
    kind = "node_failure"

    def __init__(self, node: str, *, hang: bool = False) -> None:
        if not node or not isinstance(node, str):
            raise FaultError(f"node_failure needs a node name, got {node!r}")
        self.node = node
        self.hang = hang

    def describe(self) -> str:
        return f"{'hang' if self.hang else 'fail'} node {self.node!r}"

    def plan(self) -> dict[str, Any]:
        return {"node": self.node, "hang": self.hang}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        known = [n.name for n in ctx.target.nodes()]
        if self.node not in known:
            raise SelectorMatchedNothing(
                f"node_failure: no node named {self.node!r}; the target has {known}"
            )
        if not self.hang:
            ctx.target.node_failure(self.node, changes=self.changes)
        elif isinstance(ctx.target, NodeOutage):
            ctx.target.hang_node(self.node, changes=self.changes)
        else:
            raise FaultError(
                f"node_failure(hang=True): target {ctx.target.name!r} lacks the capability "
                f"'node_outage' (a node left NotReady with its pods); its node_failure drains "
                f"the node instead: drop hang=True, or mark the scenario "
                f"@pytest.mark.chaos(requires=['node_outage'])"
            )
        return self.spec()
