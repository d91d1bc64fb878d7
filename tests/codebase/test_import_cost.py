"""What installing the plugin costs a suite that has no chaos in it: the heavy rooms stay
unimported (benchmarks/bench_collect.py measures the time; this pins what is loaded)."""

from __future__ import annotations

import pytest

PLAIN_SUITE = """
import sys

def test_plain():
    heavy = ("pytest_resilience.collect", "pytest_resilience.scenario",
             "pytest_resilience.targets.local", "pytest_resilience.targets.kubernetes",
             "pytest_resilience.engine", "pytest_resilience.chaostoolkit",
             # the rooms a chaos fixture brings in, and what they import (psutil, sqlite3)
             "pytest_resilience.faults", "pytest_resilience.slo", "pytest_resilience.timeline",
             "pytest_resilience.report", "pytest_resilience.ledger",
             "pytest_resilience.workdirs", "pytest_resilience.targets.base")
    loaded = [name for name in heavy if name in sys.modules]
    assert loaded == [], loaded
"""


def test_a_suite_without_scenarios_imports_no_target_and_no_scenario_code(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_plain=PLAIN_SUITE)
    pytester.makefile(".json", data='{"not": "a scenario"}')  # outside scenarios/
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
