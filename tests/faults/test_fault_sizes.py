"""The demo's built-in faults are sized against the bounds that judge them, with a margin.

A fault that sits on its alert's threshold fires on noise: late on a quiet machine, never on
a loaded one. First contact needs the fault well past the bound, not on it.
"""

from __future__ import annotations

from pytest_resilience.demo.api import FAULT_PERIOD
from pytest_resilience.engine import BUNDLED_PLAYBOOKS, load_playbooks

MARGIN = 1.5  # the fault's rate is at least this many times its alert's threshold


def test_the_faulty_release_fails_well_over_the_error_rate_rule_that_must_catch_it() -> None:
    # Every request of the demo's locustfile is an item request (reads and writes), and v2
    # fails one in FAULT_PERIOD of them on every pod once rolled out.
    rules = [r for b in load_playbooks(BUNDLED_PLAYBOOKS) for r in b.rules]
    (rule,) = [r for r in rules if r.alert == "ErrorRateHighCritical"]
    assert (rule.probe, rule.op) == ("error_rate", "above")
    v2_rate = 1 / FAULT_PERIOD
    assert v2_rate >= MARGIN * rule.threshold, (
        f"v2 fails {v2_rate:.1%} of requests; {rule.alert} fires above "
        f"{rule.threshold:.1%}: too close to catch it without luck"
    )
