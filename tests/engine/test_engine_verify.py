"""verify(): ``wait`` is the longest settle time, not a fixed pause before looking.

The window starts at the first sample that holds, at the latest once ``wait`` is over; a
sample that breaks the condition while the system is still settling (inside ``wait``)
restarts the settling, one that breaks it later ends the window as not fixed. So a fix
that works at once is judged after ``window``, and a verdict never comes later than
``wait`` + ``window``, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from engine_support import SLEEP, ProcTarget

from pytest_resilience.engine import Alert
from pytest_resilience.engine.actions import ActionContext
from pytest_resilience.engine.playbooks import Condition, VerifySpec
from pytest_resilience.engine.verify import FIXED, NOT_FIXED, verify

BOUND = Condition("probe", "pool_use", "below", 0.9)


@pytest.fixture
def target() -> Iterator[ProcTarget]:
    t = ProcTarget({"api": (1, {"v1": SLEEP}, "v1")})
    yield t
    t.close()


def _context(target: ProcTarget, probe: Callable[[], float | None]) -> ActionContext:
    alert = Alert("DatabaseConnectionPoolExhaustion", "api", labels={"workload": "api"})
    return ActionContext(
        target=target, alert=alert, incident_id="inc-v", probes={"pool_use": probe}
    )


def _after(schedule: list[tuple[float, float]]) -> Callable[[], float]:
    """A probe reading ``value`` from ``at`` seconds after it was made (the action's end)."""
    made = time.monotonic()

    def probe() -> float:
        elapsed = time.monotonic() - made
        return [value for at, value in schedule if elapsed >= at][-1]

    return probe


def _timed(spec: VerifySpec, ctx: ActionContext) -> tuple[str, float]:
    began = time.monotonic()
    result = verify(spec, ctx, rule=None, resolved=threading.Event())
    return result.outcome, time.monotonic() - began


def test_a_fix_that_holds_at_once_is_judged_after_the_window_not_wait_plus_window(target):
    spec = VerifySpec(wait_s=3.0, window_s=1.0, interval_s=0.1, condition=BOUND)
    outcome, took = _timed(spec, _context(target, _after([(0.0, 0.1)])))
    assert outcome == FIXED
    # wait + window is 4 s: the verdict must not have sat out the settle time
    assert took < spec.wait_s, f"verify took {took:.2f}s, the settle time was waited out"


def test_a_break_while_settling_restarts_the_window(target):
    # holds, breaks again at 0.5 s (still settling), holds for good from 1 s on
    probe = _after([(0.0, 0.1), (0.5, 1.0), (1.0, 0.1)])
    spec = VerifySpec(wait_s=3.0, window_s=1.0, interval_s=0.1, condition=BOUND)
    outcome, took = _timed(spec, _context(target, probe))
    assert outcome == FIXED
    assert took >= 2.0 - 0.05, "the window began before the last break"


def test_a_break_after_the_settle_time_is_not_fixed(target):
    # holds during the settle time, breaks inside the window that started at once
    probe = _after([(0.0, 0.1), (1.5, 1.0)])
    spec = VerifySpec(wait_s=1.0, window_s=3.0, interval_s=0.1, condition=BOUND)
    outcome, took = _timed(spec, _context(target, probe))
    assert outcome == NOT_FIXED
    assert took < spec.wait_s + spec.window_s


def test_never_holding_is_not_fixed_once_the_settle_time_is_over(target):
    spec = VerifySpec(wait_s=1.0, window_s=5.0, interval_s=0.1, condition=BOUND)
    outcome, took = _timed(spec, _context(target, _after([(0.0, 1.0)])))
    assert outcome == NOT_FIXED
    assert spec.wait_s - 0.05 <= took < spec.wait_s + spec.window_s
