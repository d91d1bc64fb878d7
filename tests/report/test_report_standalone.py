"""The standalone report: self-contained HTML, its JSON twin, the history trend."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from pytest_resilience.report.history import compare_runs, load_runs
from pytest_resilience.report.html_extras import html_extras
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

RUN_INFO = {"target": "local", "git_sha": "abc123", "command": "pytest -m chaos"}


@pytest.fixture
def results():
    return [
        sample_result(0, healed_by="engine", recover_after=12),
        sample_result(1, healed_by="platform", recover_after=20),
        sample_result(2, healed_by="none", recover_after=None, pages=1),
        sample_result(3, outcome="skipped"),
    ]


def assert_self_contained(html: str) -> None:
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html, re.I)
    assert not re.search(r"@import", html, re.I)


def test_html_is_self_contained_and_json_twin_holds_the_figures(tmp_path, results):
    out = tmp_path / "report" / "resilience.html"
    write_resilience_report(out, results, history_dir=None, run_info=RUN_INFO)
    html = out.read_text()
    assert_self_contained(html)
    assert html.count("<svg") == 4  # one timeline chart per scenario, no trend without history
    assert "0.5 V + 0.3 R + 0.2 A" in html  # the formula is in the report itself

    data = json.loads(out.with_suffix(".json").read_text())
    assert data["summary"] == {
        "scenarios": 4,
        "passed": 2,
        "failed": 1,
        "errors": 0,
        "skipped": 1,
        "score": data["score"]["value"],
    }
    assert data["metrics"]["mean_time_to_recover_s"] == 16.0
    assert data["metrics"]["mean_time_to_detect_s"] == 4.5
    assert data["metrics"]["auto_remediation_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert data["metrics"]["pages_sent"] == 1
    first = data["scenarios"][0]
    assert first["figures"] == {
        "time_to_detect": 4.5,
        "time_to_mitigate": 7.0,
        "time_to_recover": 12.0,
        "healed_by": "engine",
    }
    assert first["timeline"]["series"]["load"]  # the data behind the chart, for other tools
    assert data["strategies"][0]["strategy"] == "restart-pod"
    assert data["trend"]["kept"] is False


def test_history_trend_compares_with_the_previous_run(tmp_path, results):
    history = tmp_path / "history"
    out = tmp_path / "r.html"
    day = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    worse = [sample_result(0, healed_by="none", recover_after=None, pages=3)]
    write_resilience_report(out, worse, history_dir=history, run_info=RUN_INFO, now=day)
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["trend"]["previous"] is None

    write_resilience_report(
        out, results[:2], history_dir=history, run_info=RUN_INFO, now=day + timedelta(days=1)
    )
    data = json.loads(out.with_suffix(".json").read_text())
    deltas = {d["metric"]: d for d in data["trend"]["deltas"]}
    assert deltas["score"]["verdict"] == "better"
    assert deltas["score"]["previous"] == first["score"]["value"]
    assert deltas["pages_sent"]["delta"] == -3 and deltas["pages_sent"]["verdict"] == "better"
    assert deltas["failed"]["verdict"] == "better"
    assert len(data["trend"]["runs"]) == 2
    assert len(load_runs(history)) == 2  # each run's summary kept with its timestamp
    assert sorted(p.name for p in history.iterdir())[0] == "resilience-20260105T120000.000000Z.json"

    html = out.read_text()
    assert 'data-metric="score"' in html and ">better<" in html
    assert html.count("<svg") == 3  # two scenarios + the trend chart
    assert_self_contained(html)


def test_compare_runs_lower_is_better_for_times(tmp_path):
    now = {"metrics": {"mean_time_to_recover_s": 20.0, "score": 80.0}}
    before = {"metrics": {"mean_time_to_recover_s": 10.0, "score": 80.0}}
    verdicts = {d.metric: d.verdict for d in compare_runs(now, before)}
    assert verdicts["mean_time_to_recover_s"] == "worse"
    assert verdicts["score"] == "same"
    assert verdicts["pages_sent"] == "n/a"


def test_unreadable_history_file_is_skipped(tmp_path, caplog):
    (tmp_path / "resilience-20260101T000000.000000Z.json").write_text("{cut short")
    (tmp_path / "resilience-20260102T000000.000000Z.json").write_text('{"metrics": {}}')
    assert len(load_runs(tmp_path)) == 1
    assert "resilience-20260101T000000.000000Z.json" in caplog.text


def test_html_extras_is_one_pytest_html_extra_with_chart_figures_actions_verdicts():
    result = sample_result(0, healed_by="engine", recover_after=12)
    (extra,) = html_extras(result)
    assert extra["format_type"] == "html"
    html = extra["content"]
    assert "<script" not in html  # pytest-html inserts extras without running scripts
    assert html.count("<svg") == 1
    for text in (
        "time to detect",
        "4.5 s",
        "12.0 s",
        "engine (auto-remediation)",
        "restart_pod",
        "passed",
        "error-rate",
        "held",
        "fault window",
        "SLO recovered",
    ):
        assert text in html
    assert "seconds from fault injection (T0)" in html  # the chart's x axis


def test_notices_show_as_a_list_of_lines_not_a_python_list(tmp_path, results):
    out = tmp_path / "r.html"
    notices = [
        "probes: built-in (prometheus is not on PATH)",
        "ledger #3 pod_kill (api-0) left open by pid 41: reverted",
    ]
    info = {**RUN_INFO, "notices": notices, "allow": ["kind-ci", "chaos"]}
    write_resilience_report(out, results, history_dir=None, run_info=info)
    html = out.read_text()
    block = re.search(r'<div id="notices"[^>]*>(.*?)</div>', html, re.S)
    assert block, "no notices block in the report"
    assert re.findall(r"<li>(.*?)</li>", block[1]) == notices
    assert "[&#34;" not in html and '["' not in html and "[&#39;" not in html
    assert '<th>allow</th><td class="id">kind-ci<br>chaos</td>' in html
    assert json.loads(out.with_suffix(".json").read_text())["run_info"]["notices"] == notices

    quiet = tmp_path / "quiet.html"
    write_resilience_report(quiet, results, history_dir=None, run_info={**RUN_INFO, "notices": []})
    text = quiet.read_text()
    assert 'id="notices"' not in text and "<th>notices</th>" not in text
