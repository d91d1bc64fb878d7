"""The standalone report in a real browser: headless Chromium, file:// URL, no network.

Chromium missing: a failure under CI (the report must be proven to render there), a skip
on a laptop.
"""

from __future__ import annotations

import dataclasses

import pytest
from browser import SummaryTable, assert_not_blank, measure_layout, run_chromium

from pytest_resilience.report.model import SLOVerdict
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

#: the node ids of the repo's own main job: long, and without a space to break at
MAIN_JOB = (
    "scenarios/bad_release_rollback.yaml::bad_release_rollback",
    "scenarios/pod_kill_api.yaml::pod_kill_api",
    "scenarios/test_database_failure.py::test_postgres_lost_breaker_opens_service_stays_available",
    "scenarios/test_disk_space.py::test_disk_at_90_percent_corrupts_nothing_and_fires_an_alert",
    "scenarios/test_network_latency.py::"
    "test_500ms_on_postgres_and_redis_keeps_errors_and_p99_within_slo",
    "scenarios/test_pod_kill.py::test_api_survives_losing_a_replica",
    "scenarios/test_prometheus_loop.py::test_leaked_pool_detected_healed_and_resolved[alertmanager]",
    "scenarios/test_prometheus_loop.py::test_leaked_pool_detected_healed_and_resolved[built-in]",
    "scenarios/test_remediation.py::test_memory_hog_gc_then_scale_up_and_drain",
    "scenarios/test_remediation.py::test_leak_that_keeps_leaking_pages_once",
)


@pytest.fixture
def report(tmp_path):
    results = [
        sample_result(0, healed_by="engine", recover_after=12),
        sample_result(1, healed_by="platform", recover_after=20),
        sample_result(2, healed_by="none", recover_after=None, pages=1),
    ]
    out = tmp_path / "resilience.html"
    write_resilience_report(out, results, history_dir=None, run_info={"target": "local"})
    return out


def test_screenshot_is_not_blank(chromium, report, tmp_path):
    png = tmp_path / "shot.png"
    done = run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        report.as_uri(),
    )
    assert png.exists(), f"chromium wrote no screenshot: {done.stderr[-2000:]}"
    assert_not_blank(png, (1280, 2000))


def test_dumped_dom_holds_the_runs_figures(chromium, report, tmp_path):
    done = run_chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    parser = SummaryTable()
    parser.feed(done.stdout)
    assert parser.values["scenarios"] == "3"
    assert parser.values["passed"] == "2"
    assert parser.values["failed"] == "1"
    assert parser.values["mean_time_to_detect_s"] == "4.5 s"
    assert parser.values["mean_time_to_recover_s"] == "16.0 s"
    assert parser.values["auto_remediation_rate"] == "33%"
    assert parser.values["pages_sent"] == "1"
    assert 'id="score-formula"' in done.stdout


@pytest.fixture
def main_job_report(tmp_path):
    """A report as the main job writes it: long node ids, failures open, notices, PromQL SLOs."""
    promql = SLOVerdict(
        "checkout_error_ratio",
        "checkout_error_ratio (PromQL sum(rate(http_requests_total{code=~'5..'}[30s])) / "
        "sum(rate(http_requests_total[30s]))) <= 0.01 over 30 s",
        held=False,
        worst_value=0.2,
        worst_at=4.0,
    )
    results = []
    for index, nodeid in enumerate(MAIN_JOB):
        broken = index % 4 == 2
        result = sample_result(
            index,
            healed_by="none" if broken else "engine",
            recover_after=None if broken else 12,
            strategy="gc-then-scale-up-and-drain-the-node",
        )
        results.append(
            dataclasses.replace(
                result,
                nodeid=nodeid,
                name=nodeid.rsplit("::", 1)[-1],
                slo_verdicts=[*result.slo_verdicts, promql],
            )
        )
    out = tmp_path / "main-job.html"
    run_info = {
        "target": "local",
        "notices": [
            "probes: prometheus (managed Prometheus at http://127.0.0.1:39261, Alertmanager at "
            "http://127.0.0.1:41337 -> engine http://127.0.0.1:40123/api/v1/alerts)",
        ],
    }
    write_resilience_report(out, results, history_dir=None, run_info=run_info)
    return out


@pytest.mark.parametrize("width", [1280, 900, 500])  # table, grid rows, cards
def test_the_report_fits_the_window_without_sideways_scrolling(
    chromium, main_job_report, tmp_path, width
):
    layout = measure_layout(chromium, main_job_report, tmp_path / "layout", width=width)
    assert layout.viewport <= width
    assert layout.overflowing == []
    assert layout.scroll_width <= layout.viewport
