"""The result model: built from real timelines, round-trips through JSON, bad input named."""

from __future__ import annotations

import json

import pytest

from pytest_resilience import timeline as tl
from pytest_resilience.errors import ConfigError
from pytest_resilience.report.impact import error_rate_downtime_s, load_points
from pytest_resilience.report.model import ScenarioResult
from pytest_resilience.report.sample import sample_result


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
