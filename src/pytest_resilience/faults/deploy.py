"""Ship a bad release: roll a workload out to a faulty version, as a deploy pipeline would.

The revert rolls back to the version that ran before, but only while the bad version is
still the one running: if the remediation engine (or a human) already rolled back, the
revert finds nothing to undo and leaves the workload alone, so a test never rolls a
healthy workload "back" over its own fix.

Switching a release is a capability (:class:`~..targets.base.Releases`): a scenario using
``bad_deploy`` on a target without it is skipped at collection, naming ``releases``.
"""

from __future__ import annotations

from typing import Any

from ..errors import FaultError, SelectorMatchedNothing, TargetError
from ..targets.base import Releases, Target
from .base import Fault, FaultContext, register_reverter

__all__ = ["BadDeploy"]


class BadDeploy(Fault):
    kind = "bad_deploy"

    def __init__(self, workload: str, version: str = "v2") -> None:
        if not workload or not isinstance(workload, str):
            raise FaultError(f"bad_deploy needs a workload name, got {workload!r}")
        if not version or not isinstance(version, str):
            raise FaultError(f"bad_deploy needs a version, got {version!r}")
        self.workload = workload
        self.version = version
        self.previous: str | None = None
        self._rolled = False

    @property
    def acted(self) -> bool:
        return self._rolled

    def describe(self) -> str:
        return f"deploy {self.workload} {self.version}"

    def plan(self) -> dict[str, Any]:
        # Written before acting: a run killed mid-rollout still knows what to roll back to.
        return {"workload": self.workload, "version": self.version, "previous": self.previous}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        target = _releases(ctx.target)
        self.previous = _running_version(ctx.target, self.workload)
        if self.previous == self.version:
            raise FaultError(
                f"bad_deploy: {self.workload} already runs {self.version!r}; nothing to deploy"
            )
        self.note({"previous": self.previous})  # before acting: the version to go back to
        self._rolled = True
        target.rollout(self.workload, self.version)
        return {"workload": self.workload, "version": self.version, "previous": self.previous}

    def revert(self, ctx: FaultContext) -> None:
        _roll_back_if_bad(ctx.target, self.workload, self.version, self.previous)


def _releases(target: Target) -> Releases:
    if not isinstance(target, Releases):
        raise FaultError(
            f"bad_deploy needs the 'releases' capability, which target {target.name!r} lacks: "
            "it cannot switch a workload to another release"
        )
    return target


def _running_version(target: Target, workload: str) -> str:
    for w in target.workloads():
        if w.name == workload:
            return w.version
    raise SelectorMatchedNothing(
        f"bad_deploy: no workload named {workload!r}; the target has "
        f"{[w.name for w in target.workloads()]}"
    )


def _roll_back_if_bad(target: Target, workload: str, bad: str, previous: str | None) -> None:
    if _running_version(target, workload) != bad:
        return  # already rolled back (by the engine, a human, or a half-done rollout)
    try:
        if previous is None:  # killed mid-rollout, before the ledger learnt the old version
            target.rollback(workload)
        else:  # rollout, not rollback: exactly the recorded version, whatever the history
            _releases(target).rollout(workload, previous)
    except TargetError as exc:
        back = previous or "its previous version"
        raise FaultError(f"bad_deploy: could not roll {workload} back to {back}: {exc}") from exc


@register_reverter(BadDeploy.kind)
def _revert_from_ledger(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    # Where a killed run's pods died with it (local), nothing runs the bad version any more.
    if not ctx.target.pods_outlive_session:
        return "its pods, and the release they ran, died with their session"
    _roll_back_if_bad(ctx.target, spec["workload"], spec["version"], spec.get("previous"))
    return None
