"""Kill pods the way a crashed node or an OOM kill would, and wait for the platform.

A pod kill is instantaneous; what can stay broken is the replica count. So the fault's
"revert" is to wait until the workload is back to its replica count, and the ledger
entry closes only when the replacement is ready.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Mapping
from typing import Any

from ..errors import FaultError, SelectorMatchedNothing, TargetError
from .base import Fault, FaultContext, register_reverter

__all__ = ["PodKill"]


class PodKill(Fault):
    kind = "pod_kill"

    def __init__(
        self,
        selector: str | Mapping[str, str],
        *,
        count: int = 1,
        sig: int = signal.SIGKILL,
        replaced_within_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if count < 1:
            raise FaultError(f"pod_kill count must be >= 1, got {count!r}")
        self.selector = selector
        self.count = count
        self.sig = signal.Signals(sig)
        self.replaced_within_s = replaced_within_s
        self._rng = rng or random.Random()
        self.killed: list[str] = []
        self._workloads: dict[str, int] = {}
        self.replaced_after_s: float | None = None
        self._killed_at: float | None = None

    def describe(self) -> str:
        return f"{self.sig.name} {self.count} pod(s) matching {self.selector!r}"

    def plan(self) -> dict[str, Any]:
        return {"selector": str(self.selector), "count": self.count, "signal": self.sig.name}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        pods = [p for p in ctx.target.pods(self.selector) if p.ready]
        if not pods:
            found = ctx.target.pods(self.selector)
            raise SelectorMatchedNothing(
                f"pod_kill: no ready pod matches selector {self.selector!r}"
                + (f" ({len(found)} match but none is ready)" if found else "")
                + "; check the labels with the target's pod list"
            )
        victims = self._rng.sample(pods, min(self.count, len(pods)))
        replicas = {w.name: w.replicas for w in ctx.target.workloads()}
        self._workloads = {p.workload: replicas.get(p.workload, 1) for p in victims}
        self._killed_at = time.monotonic()
        for pod in victims:
            ctx.target.kill_pod(pod, sig=self.sig)
            self.killed.append(pod.name)
        return {"killed": self.killed, "workloads": self._workloads}

    @property
    def acted(self) -> bool:
        return bool(self.killed)

    def revert(self, ctx: FaultContext) -> None:
        _wait_replaced(ctx, self._workloads, self.replaced_within_s)
        if self._killed_at is not None:
            self.replaced_after_s = time.monotonic() - self._killed_at


def _wait_replaced(ctx: FaultContext, workloads: Mapping[str, int], timeout: float) -> None:
    for workload, replicas in workloads.items():
        try:
            ctx.target.wait_ready(workload, timeout=timeout, replicas=replicas)
        except TargetError as exc:
            raise FaultError(
                f"pod_kill: {workload} did not get back to {replicas} ready replica(s) "
                f"within {timeout:g} s: {exc}"
            ) from exc


@register_reverter(PodKill.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    # Nothing to undo by hand: the platform replaces killed pods. Where a killed run's
    # pods died with it (local), there is nothing left to wait for either.
    if not ctx.target.pods_outlive_session:
        return "its pods died with their session"
    _wait_replaced(ctx, spec.get("workloads", {}), 60.0)
    return None
