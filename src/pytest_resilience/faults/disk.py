"""Fill the filesystem behind a pod's data path to a given percent, with a real file.

The local target gives each service that declares a volume a filesystem of bounded size
(a tmpfs of ``size_mb``), so 90% means 90% of something small and the service (Postgres,
Redis) feels it for real, while the machine's own disk is never at risk.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from ..errors import FaultError, SelectorMatchedNothing
from .base import Fault, FaultContext, register_reverter

__all__ = ["DiskFill", "usage"]

FILL_PREFIX = ".pytest-resilience-fill-"


class DiskFill(Fault):
    kind = "disk_fill"

    def __init__(self, service: str, *, percent: float = 90, path: str | None = None) -> None:
        if not isinstance(percent, int | float) or not 1 <= percent <= 99:
            raise FaultError(f"disk_fill percent must be within 1..99, got {percent!r}")
        self.service = service
        self.percent = float(percent)
        self.path = path
        self.fill_file: Path | None = None

    def describe(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"fill {self.service!r} volume{where} to {self.percent:g}%"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        if ctx.target.name == "kubernetes":
            return self._kube_inject(ctx)
        volume = self._volume(ctx)
        total, used = usage(volume)
        wanted = int(total * self.percent / 100) - used
        self.fill_file = volume / f"{FILL_PREFIX}{secrets.token_hex(4)}"
        spec = {"file": str(self.fill_file)}
        self.note(spec)  # ledger first: the file is named there before it exists
        if wanted <= 0:
            return spec  # already that full: nothing to add, still a reverted no-op
        with open(self.fill_file, "wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, wanted)
            except OSError as exc:
                raise FaultError(
                    f"disk_fill: could not allocate {wanted} bytes in {volume}: {exc.strerror}"
                ) from exc
        return spec

    def revert(self, ctx: FaultContext) -> None:
        if self._kube is not None:
            self._kube_revert(ctx)
            return
        if self.fill_file is not None:
            self.fill_file.unlink(missing_ok=True)

    def _volume(self, ctx: FaultContext) -> Path:
        volume = ctx.target.volume(self.service)
        if volume is None:
            raise SelectorMatchedNothing(
                f"disk_fill: service {self.service!r} declares no volume; add "
                "`volume: {size_mb: 64}` to it in the services YAML"
            )
        if self.path is None:
            return volume
        chosen = Path(self.path)
        chosen = chosen if chosen.is_absolute() else volume / chosen
        if not chosen.resolve().is_relative_to(volume.resolve()):
            raise FaultError(
                f"disk_fill: path {self.path!r} is not on the volume of {self.service!r} ({volume})"
            )
        return chosen if chosen.is_dir() else chosen.parent

    # -- kubernetes: the target's primitives, through faults/kube_dispatch.py -------------
    _kube: Any = None  # kube_dispatch.KubeChanges once injected on kubernetes

    def _kube_inject(self, ctx: FaultContext) -> dict[str, Any]:
        from . import kube_dispatch

        self._kube = kube_dispatch.KubeChanges(self.ledger_id)
        return kube_dispatch.disk_fill(
            ctx, self._kube, service=self.service, percent=self.percent, path=self.path
        )

    def _kube_revert(self, ctx: FaultContext) -> None:
        from . import kube_dispatch

        kube_dispatch.revert(ctx, self._kube)


def usage(path: Path) -> tuple[int, int]:
    """(total, used) bytes of the filesystem holding ``path``, as ``df`` reports them."""
    stats = os.statvfs(path)
    total = stats.f_blocks * stats.f_frsize
    return total, total - stats.f_bfree * stats.f_frsize


@register_reverter(DiskFill.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> None:
    from . import kube_dispatch

    if kube_dispatch.handles(spec, ctx):
        kube_dispatch.revert_spec(spec, ctx)
        return
    if "file" in spec:
        Path(spec["file"]).unlink(missing_ok=True)
