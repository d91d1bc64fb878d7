"""--remediation-baseline without a target: the twins it collects, and the comparison's rules.

The comparison is arithmetic over two real Timelines (built through the Timeline API, as
the engine, the SLO monitor and the load driver write them): censoring, means that are
lower bounds, reductions, pages avoided. tests/plugin/test_remediation_baseline_e2e.py runs both
twins for real against the local target.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_resilience import timeline as tl
from pytest_resilience.baseline import baseline_name, expected_without_automation
from pytest_resilience.report.comparison import build_comparison, compare
from pytest_resilience.report.junit import comparison_properties, run_comparison_properties
from pytest_resilience.report.model import ScenarioResult
from pytest_resilience.report.score import run_metrics
from pytest_resilience.report.standalone import write_resilience_report

T0 = 1_700_000_000.0
NODE = "chaos_release.py::test_bad_release"
ERROR_SLO = "error rate <= 1.00% over 2 s"


def run_of(
    mode: str,
    *,
    recovered_at: float | None,
    window_s: float | None = 12.0,
    load_stops_at: float = 15.0,
    reverted_at: float | None = None,
    alerts: tuple[tuple[float, str, str], ...] = ((3.0, "ErrorRateHighCritical", "web"),),
    pages: int = 0,
    outcome: str = "passed",
    twin: str | None = None,
    breach: bool = True,
) -> ScenarioResult:
    """One run of the bad-release scenario, times in seconds from T0."""
    line = tl.Timeline(NODE, clock=lambda: T0 - 10)
    line.mark(tl.LOAD_STARTED, "locust", at=T0 - 8)
    for second in range(-6, int(load_stops_at)):
        line.record("load", {"requests": 10, "failures": 0}, at=T0 + second)
    line.mark(tl.FAULT_INJECTED, "bad_deploy", at=T0)
    if breach:
        line.mark(tl.SLO_BREACHED, "error_rate", at=T0 + 1.0, objective=ERROR_SLO, value=1.0)
    for at, name, target in alerts:
        line.mark(tl.ALERT_FIRED, name, at=T0 + at, target=target)
    automated = mode == "automated"
    line.mark(tl.ACTION_STARTED, "rollback", at=T0 + 3.0, action_id="i/1", dry_run=not automated)
    line.mark(
        tl.ACTION_FINISHED, "rollback", at=T0 + (5.0 if automated else 3.0), action_id="i/1",
        ok=automated, dry_run=not automated,
    )  # fmt: skip
    for _ in range(pages):
        line.mark(tl.ESCALATED, "ErrorRateHighCritical", at=T0 + 6.0, paged=True)
    if window_s is not None:
        line.mark(tl.RECOVERY_WINDOW, "", at=T0 + 6.0, within_s=window_s, since=None)
    if recovered_at is not None:
        line.mark(tl.SLO_RECOVERED, "error_rate", at=T0 + recovered_at, objective=ERROR_SLO)
    line.mark(tl.LOAD_STOPPED, "locust", at=T0 + load_stops_at)
    line.mark(tl.FAULT_REVERTED, "bad_deploy", at=T0 + (reverted_at or load_stops_at + 1.0))
    baseline = mode == "baseline"
    return ScenarioResult.from_timeline(
        line,
        nodeid=baseline_nodeid() if baseline else NODE,
        outcome=outcome,
        duration_s=load_stops_at + 10,
        mode=mode,
        twin=twin if twin is not None else (NODE if baseline else baseline_nodeid()),
        expected_failure="SLOViolation: SLO 'error_rate' did not recover" if baseline else "",
    )


def baseline_nodeid() -> str:
    return f"chaos_release.py::{baseline_name('test_bad_release')}"


def pair_of(automated: ScenarioResult, baseline: ScenarioResult):
    (pair,), left_out = compare([automated, baseline])
    assert left_out == []
    return pair


def test_a_baseline_that_never_recovers_is_censored_at_the_recovery_window():
    pair = pair_of(run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None))
    without = pair.baseline
    assert (without.window_s, without.observed_s, without.bound_s) == (12.0, 15.0, 12.0)
    assert (without.recover.value, without.recover.censored) == (12.0, True)
    assert (without.mitigate.value, without.mitigate.censored) == (12.0, True)  # nobody fixed it
    assert (pair.automated.recover.value, pair.automated.recover.censored) == (7.0, False)
    assert pair.automated.mitigate.value == 5.0  # the rollback finished
    reduction = pair.reductions["time_to_recover"]
    assert (reduction.pct, reduction.bound) == (round(100 * 5 / 12, 1), "at least")


def test_a_baseline_watched_for_less_than_its_window_is_censored_at_what_was_watched():
    # the YAML form: the scenario itself ends the fault at 20 s, its window is 45 s
    baseline = run_of("baseline", recovered_at=24.0, window_s=45.0, load_stops_at=30.0,
                      reverted_at=20.0)  # fmt: skip
    pair = pair_of(run_of("automated", recovered_at=7.0, window_s=45.0), baseline)
    assert pair.baseline.observed_s == 20.0
    assert (pair.baseline.recover.value, pair.baseline.recover.censored) == (20.0, True)


def test_a_baseline_that_heals_by_itself_while_watched_is_exact():
    pair = pair_of(
        run_of("automated", recovered_at=7.0, window_s=40.0),
        run_of("baseline", recovered_at=31.0, window_s=40.0, load_stops_at=38.0),
    )
    assert (pair.baseline.recover.value, pair.baseline.recover.censored) == (31.0, False)
    reduction = pair.reductions["time_to_recover"]
    assert (reduction.pct, reduction.bound) == (round(100 * 24 / 31, 1), "exact")


def test_a_baseline_stopped_before_its_window_line_takes_the_twins_window():
    # the baseline's test failed at an assertion about the engine's effect, before
    # assert_recovers(within_s=12): the scenario's window is still the twin's
    pair = pair_of(
        run_of("automated", recovered_at=7.0),
        run_of("baseline", recovered_at=None, window_s=None, load_stops_at=30.0),
    )
    assert (pair.baseline.window_s, pair.baseline.observed_s, pair.baseline.bound_s) == (
        12.0,
        30.0,
        12.0,
    )
    assert (pair.baseline.recover.value, pair.baseline.recover.censored) == (12.0, True)


def test_without_a_breach_a_recovery_after_the_watch_is_censored_too():
    # nothing breached while watched (0.6 s): the timeline's recovery (its mitigation, the
    # revert at 2.4 s) came after the watch ended, so it says nothing about the system
    baseline = run_of("baseline", recovered_at=None, breach=False, load_stops_at=0.6,
                      reverted_at=2.4)  # fmt: skip
    pair = pair_of(run_of("automated", recovered_at=None, breach=False), baseline)
    assert (pair.baseline.recover.value, pair.baseline.recover.censored) == (0.6, True)


def test_means_count_censored_figures_at_their_bound_and_say_at_least():
    second = "chaos_release.py::test_other"
    other_auto = run_of("automated", recovered_at=9.0, window_s=40.0, load_stops_at=38.0,
                        twin=f"{second}[baseline]")  # fmt: skip
    other_base = run_of("baseline", recovered_at=31.0, window_s=40.0, load_stops_at=38.0,
                        twin=second)  # fmt: skip
    other_auto.nodeid, other_base.nodeid = second, f"{second}[baseline]"
    data = build_comparison([
        run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None),
        other_auto, other_base,
    ])  # fmt: skip
    rows = {row["key"]: row for row in data["rows"]}
    mttr = rows["time_to_recover"]
    assert mttr["without"] == {"value": round((12.0 + 31.0) / 2, 3), "at_least": True}
    assert mttr["with"] == {"value": 8.0, "at_least": False}
    assert mttr["reduction"]["bound"] == "at least"
    assert mttr["scenarios"] == [NODE, second]
    assert mttr["cells"][NODE]["without"] == {"value": 12.0, "censored": True}
    assert rows["auto_remediation_rate"]["with"]["value"] == 1.0
    assert rows["auto_remediation_rate"]["without"]["value"] == 0.0
    assert mttr["seed"].startswith("60 → 15 min")


def test_a_row_also_gives_the_pairs_whose_automated_run_showed_the_figure():
    second = "chaos_release.py::test_pages"
    paged_auto = run_of("automated", recovered_at=None, twin=f"{second}[baseline]", pages=1)
    paged_base = run_of("baseline", recovered_at=None, twin=second)
    paged_auto.nodeid, paged_base.nodeid = second, f"{second}[baseline]"
    data = build_comparison([
        run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None),
        paged_auto, paged_base,
    ])  # fmt: skip
    mttr = {row["key"]: row for row in data["rows"]}["time_to_recover"]
    assert mttr["with"]["at_least"] and mttr["reduction"]["pct"] is None  # both sides bounds
    assert mttr["subset"]["scenarios"] == [NODE]
    assert mttr["subset"]["reduction"] == {"pct": round(100 * 5 / 12, 1), "bound": "at least"}
    suite = dict(run_comparison_properties(data["rows"]))
    assert suite["with_without.time_to_recover.subset_scenarios"] == "1"


def test_pages_without_automation_are_the_distinct_alerts_of_the_baseline():
    alerts = ((3.0, "ErrorRateHighCritical", "web"), (4.0, "ErrorRateHighCritical", "web"),
              (5.0, "PodCrashLoop", "web"), (30.0, "Late", "web"))  # fmt: skip
    pair = pair_of(
        run_of("automated", recovered_at=7.0, pages=1),
        run_of("baseline", recovered_at=None, alerts=alerts),
    )
    # the alert at 30 s fired after the load stopped (15 s): not watched, not counted
    assert (pair.baseline.pages, pair.automated.pages, pair.pages_avoided) == (2, 1, 1)


def test_downtime_is_clipped_to_what_was_watched_and_censored_while_breached():
    pair = pair_of(run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None))
    assert (pair.automated.downtime.value, pair.automated.downtime.censored) == (6.0, False)
    assert (pair.baseline.downtime.value, pair.baseline.downtime.censored) == (14.0, True)


def test_a_pair_with_an_errored_run_is_listed_not_compared():
    pairs, left_out = compare(
        [
            run_of("automated", recovered_at=7.0, outcome="error"),
            run_of("baseline", recovered_at=None),
        ]
    )
    assert pairs == []
    assert left_out == [
        {"nodeid": baseline_nodeid(), "twin": NODE, "reason": "automated run error"}
    ]
    pairs, left_out = compare([run_of("baseline", recovered_at=None)])
    assert "did not report" in left_out[0]["reason"]


def test_run_metrics_leave_the_baselines_out():
    metrics = run_metrics(
        [run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None)]
    )
    assert (metrics.scenarios, metrics.passed, metrics.mean_time_to_recover_s) == (1, 1, 7.0)


def test_expected_failure_is_only_an_assertion_after_the_fault():
    line = tl.Timeline("t")
    assert expected_without_automation(AssertionError("steady state broke"), line) is None
    line.mark(tl.FAULT_INJECTED, "bad_deploy")
    assert expected_without_automation(RuntimeError("crash"), line) is None
    reason = expected_without_automation(AssertionError("did not recover\nwithin 12 s"), line)
    assert reason == "AssertionError: did not recover"
    assert [e.detail["reason"] for e in line.events(tl.BASELINE_EXPECTED)] == [reason]


def test_junit_carries_the_pair_and_the_run_table():
    automated, baseline = (
        run_of("automated", recovered_at=7.0),
        run_of("baseline", recovered_at=None),
    )
    properties = dict(comparison_properties(pair_of(automated, baseline)))
    assert properties["baseline.of"] == NODE
    assert (
        properties["without.time_to_recover_s"],
        properties["without.time_to_recover_censored"],
    ) == ("12", "true")
    assert (properties["with.time_to_recover_s"], properties["with.time_to_recover_censored"]) == (
        "7",
        "false",
    )
    assert properties["reduction.time_to_recover_bound"] == "at least"
    assert (properties["without.pages"], properties["with.pages"], properties["pages_avoided"]) == (
        "1",
        "0",
        "1",
    )
    suite = dict(run_comparison_properties(build_comparison([automated, baseline])["rows"]))
    assert suite["with_without.time_to_recover.without"] == "12"
    assert suite["with_without.time_to_recover.without_at_least"] == "true"
    assert suite["with_without.pages.avoided"] == "1"


def test_the_report_shows_the_censored_baseline_as_such_first(tmp_path: Path):
    path = tmp_path / "r.html"
    write_resilience_report(
        path, [run_of("automated", recovered_at=7.0), run_of("baseline", recovered_at=None)],
        history_dir=None, run_info={"target": "local"},
    )  # fmt: skip
    page = path.read_text()
    assert page.index('id="with-without"') < page.index('id="run-summary"')
    row = re.search(r'<tr data-key="time_to_recover">.*?</tr>', page, re.S)[0]
    assert 'data-side="without" data-at-least="true"' in row and "≥ 12.0 s" in row
    assert "not recovered within 12.0 s" in page
    assert "lower bounds" in page  # the footnote says how censored figures enter the means


# -- collection ----------------------------------------------------------------------------

ENGINE_TESTS = """
import pytest

def test_heals(remediation_engine):
    pass

@pytest.mark.parametrize("alerts", ["built-in", "alertmanager"])
def test_heals_via(alerts, remediation_engine):
    pass

def test_no_engine():
    pass

class TestHealing:
    def test_in_a_class(self, remediation_engine):
        pass
"""

YAML_SCENARIO = """
title: A release rolled back by the engine
remediation: true
load: {users: 2, spawn_rate: 2}
steady-state-hypothesis:
  duration_s: 1
  slos:
    - error_rate: {below: 0.01, window_s: 2}
method:
  - fault: bad_deploy
    args: {workload: web, version: v2}
recovery:
  within_s: 10
"""


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)
    return [line for line in result.outlines if "::" in line]


def test_each_engine_item_gets_its_baseline_twin_right_after_it(pytester: pytest.Pytester):
    pytester.makepyfile(test_heal=ENGINE_TESTS)
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "release.yaml").write_text(YAML_SCENARIO)
    assert collected(pytester, "--remediation-baseline") == [
        "scenarios/release.yaml::release",
        "scenarios/release.yaml::release[baseline]",
        "test_heal.py::test_heals",
        "test_heal.py::test_heals[baseline]",
        "test_heal.py::test_heals_via[built-in]",
        "test_heal.py::test_heals_via[built-in-baseline]",
        "test_heal.py::test_heals_via[alertmanager]",
        "test_heal.py::test_heals_via[alertmanager-baseline]",
        "test_heal.py::test_no_engine",
        "test_heal.py::TestHealing::test_in_a_class",
        "test_heal.py::TestHealing::test_in_a_class[baseline]",
    ]
    assert len(collected(pytester)) == 6  # without the option: no twins


def test_the_ini_twin_turns_it_on_and_k_selects_before_twinning(pytester: pytest.Pytester):
    pytester.makepyfile(test_heal=ENGINE_TESTS)
    pytester.makeini("[pytest]\nremediation_baseline = true\n")
    assert collected(pytester, "-k", "test_heals and not via") == [
        "test_heal.py::test_heals",
        "test_heal.py::test_heals[baseline]",
    ]


def test_junit_xml_of_a_plain_run_has_no_comparison_properties(pytester: pytest.Pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    pytester.runpytest("--remediation-baseline", f"--junitxml={pytester.path / 'j.xml'}")
    tree = ET.parse(pytester.path / "j.xml")
    assert not [p for p in tree.iter("property") if p.get("name", "").startswith("with_without")]


def test_a_baseline_block_says_what_it_is_and_that_its_actions_were_not_done():
    from pytest_resilience.report.charts import chart_legend
    from pytest_resilience.report.html_extras import scenario_html

    baseline = run_of("baseline", recovered_at=None)
    (action,) = baseline.actions
    assert (action.dry_run, action.ok) == (True, False)
    (row,) = [
        r for r in re.findall(r"<tr>.*?</tr>", scenario_html(baseline), re.S) if "rollback" in r
    ]
    assert '<td data-label="result" class="muted">dry run: decided, not done</td>' in row
    labels = [entry.label for entry in chart_legend(baseline)]
    assert "engine would have acted (dry run)" in labels and "action failed" not in labels
