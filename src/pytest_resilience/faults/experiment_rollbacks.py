"""A Chaos Toolkit experiment's rollbacks, held in the ledger like any fault.

Armed before the method acts, so the entry exists whatever ends the run: the experiment
runner plays the rollbacks through :meth:`ExperimentRollbacks.revert` (success, deviation,
abort, Ctrl-C, SIGTERM), and after SIGKILL the reverter below plays them from the spec
alone (``pytest --chaos-cleanup`` or the next session). A rollback that fails keeps the
entry open with only the failed rollbacks, so a later cleanup retries those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import FaultError
from .base import Fault, FaultContext, register_reverter

__all__ = ["KIND", "ExperimentRollbacks"]

KIND = "chaostoolkit_rollbacks"


class ExperimentRollbacks(Fault):
    kind = KIND

    def __init__(self, spec: dict[str, Any], play: Callable[[], list[Any]]) -> None:
        self._spec = spec
        self._play = play
        #: set by the runner when the rollback strategy says not to play them
        self.skip_reason: str | None = None
        self._failure: FaultError | None = None
        self._played = False

    def describe(self) -> str:
        names = ", ".join(str(r.get("name")) for r in self._spec["rollbacks"])
        return (
            f"rollbacks of experiment {self._spec['title']!r} ({self._spec['experiment']}): {names}"
        )

    def plan(self) -> dict[str, Any]:
        return dict(self._spec)

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return {}  # the experiment's method acts; this only holds what undoes it

    def revert(self, ctx: FaultContext) -> None:
        if self._played or self.skip_reason:
            if self._failure is not None:
                raise self._failure  # a second revert (teardown) does not play them twice
            return
        self._played = True
        runs = self._play()
        failed = [i for i, run in enumerate(runs) if run.status != "succeeded"]
        if failed:
            self.note({**self._spec, "rollbacks": [self._spec["rollbacks"][i] for i in failed]})
            self._failure = _failure(self._spec, [runs[i] for i in failed])
            raise self._failure


def _failure(spec: dict[str, Any], runs: list[Any]) -> FaultError:
    what = "; ".join(f"{run.name!r}: {run.error}" for run in runs)
    return FaultError(
        f"rollback of experiment {spec['title']!r} failed: {what}. The ledger keeps these "
        "rollbacks: run `pytest --chaos-cleanup` once the cause is fixed."
    )


@register_reverter(KIND)
def _replay(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    from ..chaostoolkit.run import replay_rollbacks

    runs = replay_rollbacks(spec, target=ctx.target)  # mapped actions act on the target
    failed = [run for run in runs if run.status != "succeeded"]
    if failed:
        raise _failure(spec, failed)
    return None
