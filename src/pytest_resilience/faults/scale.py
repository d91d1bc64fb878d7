"""Scale a workload to a replica count; the revert scales it back to what it ran before.

What a ``kubectl scale`` (or chaostoolkit-kubernetes' ``scale_deployment``) does, held in
the ledger: the replica count before the change is written *before* the target is asked
to scale, so a run killed at any moment is scaled back by ``pytest --chaos-cleanup``. The
revert waits until the workload is back to that count, so the entry closes only when the
platform has done it.
"""

from __future__ import annotations

from typing import Any

from ..errors import FaultError, SelectorMatchedNothing, TargetError
from .base import Fault, FaultContext, register_reverter

__all__ = ["Scale"]

#: how long a revert waits for the workload to be back to its replica count
READY_TIMEOUT_S = 120.0


class Scale(Fault):
    kind = "scale"

    def __init__(self, workload: str, replicas: int) -> None:
        if not workload or not isinstance(workload, str):
            raise FaultError(f"scale needs a workload name, got {workload!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise FaultError(
                f"scale {workload}: replicas must be an integer >= 0, got {replicas!r}"
            )
        self.workload = workload
        self.replicas = replicas
        self.previous: int | None = None

    @property
    def acted(self) -> bool:
        return self.previous is not None

    def describe(self) -> str:
        return f"scale {self.workload} to {self.replicas} replica(s)"

    def plan(self) -> dict[str, Any]:
        return {"workload": self.workload, "replicas": self.replicas, "previous": self.previous}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        known = {w.name: w.replicas for w in ctx.target.workloads()}
        if self.workload not in known:
            raise SelectorMatchedNothing(
                f"scale: no workload named {self.workload!r}; the target has {sorted(known)}"
            )
        self.note({"previous": known[self.workload]})  # ledger first: the count to go back to
        self.previous = known[self.workload]
        ctx.target.scale(self.workload, self.replicas)
        return self.plan()

    def revert(self, ctx: FaultContext) -> None:
        if self.previous is not None:
            _scale_back(ctx, self.workload, self.previous)


def _scale_back(ctx: FaultContext, workload: str, replicas: int) -> None:
    try:
        ctx.target.scale(workload, replicas)
        ctx.target.wait_ready(workload, timeout=READY_TIMEOUT_S, replicas=replicas)
    except TargetError as exc:
        raise FaultError(
            f"scale: could not bring {workload} back to {replicas} replica(s): {exc}"
        ) from exc


@register_reverter(Scale.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    if spec.get("previous") is None:
        return "it never acted: its run ended before it read the replica count"
    if not ctx.target.pods_outlive_session:
        return "its workload died with its session"
    _scale_back(ctx, str(spec["workload"]), int(spec["previous"]))
    return None
