"""A chaos item's :class:`~.report.ScenarioResult`, built from what its stash holds.

At the teardown report every fault is reverted and the timeline is complete: the result is
built then, added to the run and attached to the report (pytest-html extras, JUnit
properties). A scenario cut short by Ctrl-C or SIGTERM gets no teardown report; the run's
end settles it (:func:`settle_interrupted`) as an error with what its timeline recorded.
Under ``--remediation-baseline`` an item is one of a pair: :func:`twin_of` and
:func:`baseline_of` say which (baseline.py makes the pairs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .outcomes import final_outcome
from .stash_keys import DURATION_KEY, EXPECTED_KEY, RUN_KEY, SLO_KEY, TIMELINE_KEY

if TYPE_CHECKING:
    import pytest

    from .report import ScenarioResult
    from .run import ChaosRun

__all__ = ["baseline_of", "record_result", "settle_interrupted", "twin_of"]


def record_result(item: pytest.Item, teardown: pytest.TestReport) -> ScenarioResult:
    """The scenario's result, once its ``teardown`` report is in: kept by the run (for the
    resilience report) and attached to ``teardown``."""
    from .results import attach

    run = item.config.stash[RUN_KEY]
    twin = twin_of(item)
    result = _result(
        item,
        run,
        outcome=final_outcome(item, teardown),
        mode="automated" if twin is None else "baseline",
        twin=twin or baseline_of(item) or "",
        expected_failure=item.stash.get(EXPECTED_KEY, ""),
    )
    run.running.pop(item.nodeid, None)
    run.results.append(result)
    attach(teardown, result, run)
    return result


def settle_interrupted(run: ChaosRun) -> None:
    """Each scenario still running (cut short: no call or teardown report) enters the
    results as an error, with a notice saying its faults were reverted at teardown."""
    for nodeid, item in list(run.running.items()):
        run.running.pop(nodeid)
        run.results.append(_result(item, run, outcome="error"))
        run.notices.append(f"{nodeid} was interrupted; its faults were reverted at teardown")


def twin_of(item: pytest.Item) -> str | None:
    """A baseline item's automated twin (its nodeid); None for every other item."""
    if not item.config.stash[RUN_KEY].settings.remediation_baseline:
        return None
    from .baseline import TWIN_OF

    return item.stash.get(TWIN_OF, None)


def baseline_of(item: pytest.Item) -> str | None:
    """An automated item's baseline twin (its nodeid), when --remediation-baseline made one."""
    if not item.config.stash[RUN_KEY].settings.remediation_baseline:
        return None
    from .baseline import BASELINE_OF

    return item.stash.get(BASELINE_OF, None)


def _result(
    item: pytest.Item,
    run: ChaosRun,
    *,
    outcome: str,
    mode: str = "automated",
    twin: str = "",
    expected_failure: str = "",
) -> ScenarioResult:
    from .results import scenario_result

    return scenario_result(
        nodeid=item.nodeid,
        timeline=item.stash[TIMELINE_KEY],
        slo=item.stash.get(SLO_KEY, None),
        outcome=outcome,
        duration_s=item.stash.get(DURATION_KEY, 0.0),
        run=run,
        mode=mode,
        twin=twin,
        expected_failure=expected_failure,
    )
