"""The score formula and the run's metrics table, on hand-checkable scenarios."""

from __future__ import annotations

import pytest

from pytest_resilience.report.model import ScenarioResult, SLOVerdict
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.score import (
    SCORE_FORMULA,
    run_metrics,
    run_score,
    scenario_score,
    strategy_stats,
)
from pytest_resilience.slo import SLOMonitor
from pytest_resilience.timeline import Timeline


def test_score_formula_parts():
    engine = sample_result(0, healed_by="engine", recover_after=30)
    s = scenario_score(engine, recovery_budget_s=300)
    # V = 1 (held), R = 1 - 30/300 = 0.9, A = 1 (engine, no page)
    assert (s.slos_held, s.recovery_speed, s.self_healed) == (1.0, 0.9, 1.0)
    assert s.score == pytest.approx(100 * (0.5 + 0.3 * 0.9 + 0.2))

    paged = scenario_score(sample_result(1, healed_by="engine", recover_after=30, pages=1))
    assert paged.self_healed == 0.0 and paged.score == pytest.approx(77.0)

    never = scenario_score(sample_result(2, healed_by="none", recover_after=None))
    assert (never.slos_held, never.recovery_speed, never.self_healed) == (0.0, 0.0, 0.0)
    assert never.score == 0.0

    assert scenario_score(sample_result(3, outcome="skipped")) is None
    assert scenario_score(sample_result(4, outcome="error")).score == 0.0


def test_run_score_is_the_mean_over_scenarios_that_ran():
    results = [
        sample_result(0, healed_by="engine", recover_after=30),  # 97
        sample_result(1, healed_by="none", recover_after=None),  # 0
        sample_result(2, outcome="skipped"),
    ]
    assert run_score(results) == pytest.approx(48.5)
    assert "0.5 V + 0.3 R + 0.2 A" in SCORE_FORMULA


def test_metrics_table():
    results = [
        sample_result(0, healed_by="engine", recover_after=10),
        sample_result(1, healed_by="platform", recover_after=20, pages=1),
        sample_result(2, healed_by="none", recover_after=None, pages=2),
        sample_result(3, outcome="skipped"),
    ]
    m = run_metrics(results)
    assert (m.scenarios, m.passed, m.failed, m.skipped) == (4, 2, 1, 1)
    assert m.mean_time_to_detect_s == 4.5
    assert m.mean_time_to_recover_s == 15.0  # (10 + 20) / 2; the unrecovered one is counted apart
    assert m.not_recovered == 1
    assert (m.healed_by_engine, m.with_fault) == (1, 3)
    assert m.auto_remediation_rate == pytest.approx(1 / 3, abs=1e-4)
    assert m.pages_sent == 3
    # breached 3 s after T0: 7 + 17 s, and the unrecovered one until the last sample (59 - 13)
    assert m.downtime_s == pytest.approx(7 + 17 + 46)


def test_strategy_success_rate_and_time_to_recover():
    results = [
        sample_result(0, healed_by="engine", recover_after=10, strategy="restart"),
        sample_result(1, healed_by="none", recover_after=None, strategy="restart"),
        sample_result(2, healed_by="engine", recover_after=30, strategy="scale-up"),
    ]
    by_name = {s.strategy: s for s in strategy_stats(results)}
    assert by_name["restart"].success_rate == 0.5
    assert by_name["restart"].mean_time_to_recover_s == 10.0
    assert by_name["restart"].healed == 1
    assert by_name["scale-up"].success_rate == 1.0
    assert by_name["scale-up"].mean_time_to_recover_s == 30.0


def _scenario_whose_slo_had_no_data(outcome: str) -> ScenarioResult:
    """What the plugin records for a scenario whose SLO was never judged (no load ran)."""
    line = Timeline("no-data", clock=lambda: 1000.0)
    monitor = SLOMonitor(line)
    monitor.error_rate(below=0.01)
    return ScenarioResult.from_timeline(
        line,
        nodeid="scenarios/test_x.py::test_x",
        outcome=outcome,
        duration_s=3.0,
        slo_verdicts=monitor.verdicts(),
    )


def test_a_run_whose_only_scenario_failed_on_an_slo_without_data_scores_zero():
    failed = _scenario_whose_slo_had_no_data("failed")
    assert [v.held for v in failed.slo_verdicts] == [False]
    assert scenario_score(failed).score == 0.0
    assert run_score([failed]) == 0.0
    assert run_metrics([failed]).score == 0.0


def test_an_slo_without_data_is_not_held_even_when_a_verdict_says_so():
    # a verdict written as "held" without a single reading (as older runs' JSON holds them)
    passed = sample_result(0, healed_by="engine", recover_after=30)
    passed.slo_verdicts = [
        SLOVerdict("error-rate", "error rate <= 1.00% over 5 s", held=True, worst_value=None)
    ]
    assert scenario_score(passed).slos_held == 0.0


@pytest.mark.parametrize("outcome", ["failed", "error"])
def test_a_failed_or_errored_scenario_never_raises_the_run_score(outcome: str):
    # Everything about it looked fine (SLOs held, no breach), yet the test failed: another
    # check of the scenario broke, so it scores nothing.
    looks_fine = sample_result(1, healed_by="engine", recover_after=5, outcome=outcome)
    assert all(v.held for v in looks_fine.slo_verdicts)
    assert scenario_score(looks_fine).score == 0.0
    weaker = sample_result(2, healed_by="engine", recover_after=30, pages=1)  # 77
    assert run_score([weaker, looks_fine]) <= run_score([weaker])
    assert run_metrics([weaker, looks_fine]).score <= run_metrics([weaker]).score
