"""The timeline chart shows what the SLO table says: its axes hold every breach, bound and worst.

The axes are read from the figure the chart was just drawn on (one figure is reused per
thread, which is exactly where a chart can inherit the previous chart's scale).
"""

from __future__ import annotations

import dataclasses

import pytest
from test_report_model import _failing_before_any_fault

from pytest_resilience.report import charts
from pytest_resilience.report.charts import chart_legend, timeline_chart_svg
from pytest_resilience.report.impact import load_points
from pytest_resilience.report.model import ScenarioResult, SLOVerdict
from pytest_resilience.report.sample import sample_result

HEADROOM = 1.05  # at least this much space above the highest thing a panel must show


def _drawn_limits(result: ScenarioResult) -> dict[str, tuple[float, float]]:
    """The y range of each panel, as drawn for ``result`` (rendered afresh, not cached)."""
    charts.clear_chart_cache()
    timeline_chart_svg(result)
    _, axes = charts._timeline_figure()
    return {ax.get_ylabel(): tuple(ax.get_ylim()) for ax in axes}


def _clean(index: int = 0) -> ScenarioResult:
    return sample_result(index, recover_after=0)  # no failing second, p99 near 60 ms


def test_a_chart_does_not_inherit_the_scale_of_the_chart_drawn_before_it():
    _drawn_limits(_clean())
    breach = sample_result(1, healed_by="none", recover_after=None)
    limits = _drawn_limits(breach)
    points = load_points(breach)
    peak_errors = max(v for v in points.error_rate_pct if v is not None)
    peak_p99 = max(v for v in points.p99_ms if v is not None)
    assert peak_errors > 20 and peak_p99 > 350  # the breach the chart must show
    assert limits["errors %"][1] >= HEADROOM * peak_errors
    assert limits["p99 ms"][1] >= HEADROOM * peak_p99
    assert limits["errors %"][0] == limits["p99 ms"][0] == 0


def test_axes_include_each_slos_worst_value_and_bound_with_headroom():
    clean = _clean(2)
    result = dataclasses.replace(
        clean,
        slo_verdicts=[
            # worst values from another probe path (Prometheus) than the plotted load series
            SLOVerdict("errors", "error rate <= 5.00% over 5 s", held=True, worst_value=0.04),
            SLOVerdict("p99", "p99 latency <= 2000 ms over 10 s", False, 2600.0, worst_at=8.0),
        ],
    )
    limits = _drawn_limits(result)
    assert limits["errors %"][1] >= HEADROOM * 5.0  # the bound, above the worst 4 %
    assert limits["p99 ms"][1] >= HEADROOM * 2600.0  # the worst, above the bound
    _, axes = charts._timeline_figure()
    bounds = [line.get_ydata()[0] for line in axes[1].lines if line.get_label() == "_slo_bound"]
    assert bounds == [2000.0]
    worst = [line.get_ydata()[0] for line in axes[1].lines if line.get_label() == "_slo_worst"]
    assert worst == [2600.0]
    labels = [e.label for e in chart_legend(result)]
    assert "SLO bound" in labels and "SLO worst" in labels


@pytest.mark.parametrize(
    ("objective", "worst"),
    [("p95 latency <= 800 ms over 5 s", 900.0), ("availability >= 99.00% over 10 s", 0.9)],
)
def test_an_slo_without_a_panel_of_its_own_does_not_bend_the_axes(objective, worst):
    clean = _clean(3)
    plain = _drawn_limits(dataclasses.replace(clean, slo_verdicts=[]))
    other = dataclasses.replace(
        clean, slo_verdicts=[SLOVerdict("other", objective, held=False, worst_value=worst)]
    )
    assert _drawn_limits(other) == plain


def test_a_chart_without_a_fault_says_its_seconds_count_from_the_start():
    svg = timeline_chart_svg(_failing_before_any_fault())
    assert "seconds from scenario start (no fault injected)" in svg
    assert "fault injection (T0)" not in svg
    assert "seconds from fault injection (T0)" in timeline_chart_svg(_clean(4))
