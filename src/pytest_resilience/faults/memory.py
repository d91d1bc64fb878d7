"""Memory pressure: make a pod's memory grow to a share of its limit, as a leak would.

The target does it (:meth:`~..targets.base.FaultPrimitives.memory_stress`): on the local
target a helper process started inside each pod (its memory cgroup, so the kernel
enforces ``memory_limit_mb`` on it as on the service's own growth;
:mod:`..targets.local.memory`), on Kubernetes a holder exec'd in each pod. The undo stops
the helpers, from the change records alone after SIGKILL (pid and start time, so never a
stranger that inherited the pid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import FaultContext, TargetFault

__all__ = ["MemoryStress"]


class MemoryStress(TargetFault):
    kind = "memory_stress"

    def __init__(
        self,
        selector: str | Mapping[str, str],
        *,
        share: float = 0.8,
        hold: bool = True,
        mb: int | None = None,
        count: int | None = None,
    ) -> None:
        """``selector``: a service (workload) name or a label selector; every matching pod is
        stressed. ``share``: fraction of the pod's memory limit to fill, strictly between 0
        and 1. ``hold``: keep the memory until the revert (False: allocate and free at once,
        a spike). ``mb``: grow by this many MiB instead of up to a share (needed on
        kubernetes, where the target reads no pod memory usage). ``count``: stress only
        the first ``count`` matching pods."""
        if not selector or not isinstance(selector, str | Mapping):
            raise ConfigError(
                f"memory_stress needs a service name or label selector, got {selector!r}",
                field="selector",
            )
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ConfigError(
                f"memory_stress share is the fraction of the memory limit to fill, strictly "
                f"between 0 and 1 (0.8 = 80%), got {share!r}",
                field="share",
            )
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
            raise ConfigError(
                f"memory_stress mb must be a whole number of MiB >= 1, got {mb!r}", field="mb"
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ConfigError(f"memory_stress count must be >= 1, got {count!r}", field="count")
        self.selector = selector
        self.count = count
        self.share = float(share)
        self.hold = hold
        self.mb = mb

    def describe(self) -> str:
        how = f"+{self.mb} MiB" if self.mb else f"{self.share:.0%} of the memory limit"
        return f"memory of pods {self.selector!r} to {how}{'' if self.hold else ' (spike)'}"

    def plan(self) -> dict[str, Any]:
        return {"selector": str(self.selector), "share": self.share, "hold": self.hold}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        ctx.target.memory_stress(
            self.selector,
            share=self.share,
            mb=self.mb,
            hold=self.hold,
            count=self.count,
            changes=self.changes,
        )
        return self.spec()
