"""A chaos item's outcome as the resilience report counts it, from its phase reports.

pytest reports setup, call and teardown apart; the report wants one outcome per scenario.
The call decides it (passed, failed, skipped); a setup that did not pass is an ``error``
(the scenario never ran), and so is a test that passed but failed in its teardown (a fault
that could not be reverted). The outcome and the deciding phase's duration are kept on the
item (:data:`~.stash_keys.OUTCOME_KEY`, :data:`~.stash_keys.DURATION_KEY`) until the
teardown, when the result is built (item_results.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .stash_keys import DURATION_KEY, OUTCOME_KEY

if TYPE_CHECKING:
    import pytest

__all__ = ["final_outcome", "record_outcome"]


def record_outcome(item: pytest.Item, report: pytest.TestReport) -> None:
    """Keep the outcome and duration of the phase that decides the scenario's outcome."""
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        item.stash[OUTCOME_KEY] = "error" if report.when == "setup" else report.outcome
        item.stash[DURATION_KEY] = report.duration


def final_outcome(item: pytest.Item, teardown: pytest.TestReport) -> str:
    """The scenario's outcome once its ``teardown`` report is in: ``error`` if none was kept
    (interrupted) or if a passed test failed at teardown."""
    outcome = item.stash.get(OUTCOME_KEY, "error")
    if teardown.outcome == "failed" and outcome == "passed":
        return "error"
    return outcome
