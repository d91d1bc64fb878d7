"""Fill the filesystem behind a pod's data path to a given percent, with a real file.

The target writes the file (:meth:`~..targets.base.FaultPrimitives.disk_fill`): the local
target on the service's bounded volume (a tmpfs of ``size_mb``, so 90% means 90% of
something small and the machine's own disk is never at risk), Kubernetes in each pod's
volume mount. The undo removes exactly that file.
"""

from __future__ import annotations

from typing import Any

from ..errors import FaultError
from .base import FaultContext, TargetFault

__all__ = ["DiskFill"]


class DiskFill(TargetFault):
    kind = "disk_fill"

    def __init__(self, service: str, *, percent: float = 90, path: str | None = None) -> None:
        if not isinstance(percent, int | float) or not 1 <= percent <= 99:
            raise FaultError(f"disk_fill percent must be within 1..99, got {percent!r}")
        self.service = service
        self.percent = float(percent)
        self.path = path

    def describe(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"fill {self.service!r} volume{where} to {self.percent:g}%"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        ctx.target.disk_fill(
            self.service, percent=self.percent, path=self.path, changes=self.changes
        )
        return self.spec()
