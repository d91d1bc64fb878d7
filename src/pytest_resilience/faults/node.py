"""Fail a node: every pod on it hangs, as on a kernel lock-up or a lost kubelet.

On the local target the pods on the node are paused (SIGSTOP), so they hold their
sockets and answer nothing, which is what clients of a NodeNotReady node see; revert
resumes them. On Kubernetes the node is cordoned and drained by the target.
"""

from __future__ import annotations

import signal
from typing import Any

import psutil

from ..errors import FaultError, SelectorMatchedNothing
from .base import Fault, FaultContext, register_reverter

__all__ = ["NodeFailure"]


class NodeFailure(Fault):
    kind = "node_failure"

    def __init__(self, node: str) -> None:
        if not node or not isinstance(node, str):
            raise FaultError(f"node_failure needs a node name, got {node!r}")
        self.node = node
        self._paused: list[Any] = []

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
        if ctx.target.name == "kubernetes":
            return {"node": self.node, **self._kube_inject(ctx)}  # cordon + drain
        pods = [p for p in ctx.target.pods() if p.node == self.node]
        for pod in pods:
            ctx.target.pause_pod(pod)
            self._paused.append(pod)
        return {"node": self.node, "pids": [p.pid for p in pods if p.pid]}

    def revert(self, ctx: FaultContext) -> None:
        if self._kube is not None:
            self._kube_revert(ctx)
            return
        # Pods drained meanwhile (by the engine, say) are gone: resume those still there.
        present = {p.name for p in ctx.target.pods()}
        for pod in reversed(self._paused):
            if pod.name in present:
                ctx.target.resume_pod(pod)
        self._paused.clear()

    # -- kubernetes: the target's primitives, through faults/kube_dispatch.py -------------
    _kube: Any = None  # kube_dispatch.KubeChanges once injected on kubernetes

    def _kube_inject(self, ctx: FaultContext) -> dict[str, Any]:
        from . import kube_dispatch

        self._kube = kube_dispatch.KubeChanges(self.ledger_id)
        return kube_dispatch.node_failure(ctx, self._kube, node=self.node)

    def _kube_revert(self, ctx: FaultContext) -> None:
        from . import kube_dispatch

        kube_dispatch.revert(ctx, self._kube)


@register_reverter(NodeFailure.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> None:
    from . import kube_dispatch

    if kube_dispatch.handles(spec, ctx):
        kube_dispatch.revert_spec(spec, ctx)
        return
    # A killed run's local pods died with it; resume any that is still stopped.
    for pid in spec.get("pids", []):
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_STOPPED:
                for member in [process, *process.children(recursive=True)]:
                    member.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            continue
