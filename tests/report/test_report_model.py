"""The result model: built from real timelines, round-trips through JSON, bad input named."""

from __future__ import annotations

import json

import pytest

from pytest_resilience import timeline as tl
from pytest_resilience.errors import ConfigError
from pytest_resilience.report.html_extras import scenario_html
from pytest_resilience.report.impact import error_rate_downtime_s, load_points
from pytest_resilience.report.junit import junit_properties
from pytest_resilience.report.model import ScenarioResult
from pytest_resilience.report.sample import sample_result
from pytest_resilience.slo import SLOMonitor


def test_from_timeline_reads_actions_verify_and_pages_from_events():
    result = sample_result(3, healed_by="engine", pages=2)
    assert result.figures.healed_by == "engine"
    assert result.figures.time_to_detect == 4.5
    (action,) = result.actions
    assert (action.strategy, action.action, action.target) == (
        "restart-pod",
        "restart_pod",
        "api-0",
    )
    assert (action.started_at, action.finished_at, action.ok) == (5.0, 7.0, True)
    assert action.verify == "passed"
    assert result.pages_sent == 2
    assert result.slo_verdicts[0].recovered_within_s == 15.0


def test_failed_action_and_failed_verify_are_kept():
    timeline = tl.Timeline("x")
    timeline.mark(tl.FAULT_INJECTED, "latency", at=100.0)
    timeline.mark(tl.ACTION_STARTED, "scale_up", at=101.0, strategy="scale")
    timeline.mark(tl.ACTION_FINISHED, "scale_up", at=103.0, strategy="scale", ok=True)
    timeline.mark(tl.VERIFIED, "scale_up", at=104.0, ok=False, detail="p99 still 900 ms")
    result = ScenarioResult.from_timeline(
        timeline, nodeid="t.py::test_x", outcome="failed", duration_s=5
    )
    (action,) = result.actions
    assert action.ok is True and action.verify == "failed: p99 still 900 ms"
    assert not action.succeeded


def test_round_trip_through_json():
    result = sample_result(1)
    again = ScenarioResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    assert again.figures == result.figures


def test_bad_input_names_the_field():
    data = sample_result(1).to_dict()
    with pytest.raises(ConfigError, match="outcome"):
        ScenarioResult.from_dict({**data, "outcome": "green"})
    with pytest.raises(ConfigError, match="nodeid"):
        ScenarioResult.from_dict({k: v for k, v in data.items() if k != "nodeid"})
    with pytest.raises(ConfigError, match="'colour'"):
        ScenarioResult.from_dict({**data, "colour": "red"})
    bad_verdict = {**data, "slo_verdicts": [{"name": "x"}]}
    with pytest.raises(ConfigError, match="objective"):
        ScenarioResult.from_dict(bad_verdict)


def test_load_points_are_seconds_from_t0_and_error_rate_in_percent():
    result = sample_result(2, fault_at=10)
    points = load_points(result)
    assert points.t[0] == -10.0 and points.t[10] == 0.0
    assert points.error_rate_pct[0] == 0.0
    assert 20.0 <= points.error_rate_pct[14] <= 30.0


def test_downtime_is_error_rate_breach_seconds_with_overlaps_counted_once():
    timeline = tl.Timeline("x")
    timeline.mark(tl.FAULT_INJECTED, "f", at=0.0)
    timeline.mark(tl.SLO_BREACHED, "errors", at=2.0, objective="error rate <= 1.00% over 5 s")
    timeline.mark(tl.SLO_BREACHED, "error-budget", at=4.0, objective="error rate <= 5.00% over 5 s")
    timeline.mark(tl.SLO_BREACHED, "p99", at=1.0, objective="p99 latency <= 300 ms over 5 s")
    timeline.mark(tl.SLO_RECOVERED, "errors", at=8.0)
    timeline.mark(tl.SLO_RECOVERED, "error-budget", at=10.0)
    timeline.mark(tl.SLO_RECOVERED, "p99", at=30.0)
    result = ScenarioResult.from_timeline(timeline, nodeid="t::x", outcome="passed", duration_s=1)
    assert error_rate_downtime_s(result) == 8.0  # 2..10, latency breach not counted


def _failing_before_any_fault() -> ScenarioResult:
    """A real SLO monitor over a wall-clock timeline that fails in steady state (no T0)."""
    start = 1_764_600_000.0  # an epoch time, as the real clock gives
    timeline = tl.Timeline("steady-fails", clock=lambda: start)
    monitor = SLOMonitor(timeline)
    monitor.error_rate(below=0.01, window_s=1)
    for k in range(6):
        failures = 40 if k == 3 else 0
        timeline.record("load", {"requests": 100, "failures": failures, "p99": 50}, at=start + k)
    timeline.mark(tl.ACTION_STARTED, "restart_pod", at=start + 4, strategy="restart-pod")
    timeline.mark(tl.ACTION_FINISHED, "restart_pod", at=start + 5, strategy="restart-pod")
    return ScenarioResult.from_timeline(
        timeline,
        nodeid="t.py::test_steady_state_fails",
        outcome="failed",
        duration_s=6,
        slo_verdicts=monitor.verdicts(),
    )


def test_without_a_fault_times_count_from_the_start_never_from_the_epoch():
    result = _failing_before_any_fault()
    assert result.t0 is None
    (verdict,) = result.slo_verdicts
    assert not verdict.held and verdict.worst_value == pytest.approx(0.4)
    assert verdict.worst_at == pytest.approx(3.0)
    (action,) = result.actions
    assert (action.started_at, action.finished_at) == (4.0, 5.0)
    again = ScenarioResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.slo_verdicts[0].worst_at == pytest.approx(3.0)  # not shifted a second time

    html = scenario_html(result)
    assert "worst at (s from start, no fault)" in html and "s from T0" not in html
    assert ">3.0 s<" in html and " min<" not in html
    props = dict(junit_properties(result))
    assert props["slo.error_rate.worst_at_s"] == "3"
    assert result.time_origin == props["times_from"] == "start"


def test_with_a_fault_times_still_count_from_t0():
    result = sample_result(0)
    html = scenario_html(result)
    assert "worst at (s from T0)" in html and "started (s from T0)" in html
    assert result.slo_verdicts[0].worst_at == 5.0
    assert result.time_origin == dict(junit_properties(result))["times_from"] == "T0"
