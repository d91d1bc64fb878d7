"""Console lines and JUnit properties, and the wiring into real pytest-html and junitxml."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_resilience.report.console import notice_lines, phase_line, terminal_summary_lines
from pytest_resilience.report.junit import junit_properties
from pytest_resilience.report.sample import sample_result
from pytest_resilience.results import resilience_section_lines
from pytest_resilience.run import ChaosRun
from pytest_resilience.settings import ChaosSettings


def test_junit_properties_hold_figures_and_verdicts():
    props = dict(junit_properties(sample_result(0, healed_by="engine", recover_after=12)))
    assert props["time_to_detect_s"] == "4.5"
    assert props["time_to_mitigate_s"] == "7"
    assert props["time_to_recover_s"] == "12"
    assert props["healed_by"] == "engine"
    assert props["slo.error-rate"] == "held"
    assert props["slo.error-rate.recovered_within_s"] == "12"
    assert props["action.1"] == "restart-pod/restart_pod ok; verify passed"
    never = dict(junit_properties(sample_result(1, healed_by="none", recover_after=None)))
    assert never["time_to_recover_s"] == "" and never["healed_by"] == ""
    assert never["slo.error-rate"] == "violated"


def test_phase_line_and_summary():
    assert phase_line("remediate", "test_pod_kill", 12.34) == (
        "[chaos]   T+12.3s  remediate      test_pod_kill"
    )
    assert "T-5.0s" in phase_line("steady_state", "x", -5)
    assert "steady state" in phase_line("steady_state", "x", None)
    lines = terminal_summary_lines(
        [sample_result(0, recover_after=12), sample_result(1, healed_by="none", recover_after=None)]
    )
    assert lines[0].startswith("2 chaos scenario(s): 1 passed, 1 failed")
    assert "auto-remediation 50% (1/2)" in lines[1]
    assert any("FAILED" in line and "error-rate" in line for line in lines)
    assert terminal_summary_lines([]) == []


CONFTEST = """
import pytest
from pytest_resilience.report.html_extras import html_extras
from pytest_resilience.report.junit import junit_properties
from pytest_resilience.report.sample import sample_result


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "teardown":  # the timeline is complete once faults are reverted
        result = sample_result(0, recover_after=12)
        report.extras = [*getattr(report, "extras", []), *html_extras(result)]
        report.user_properties.extend(junit_properties(result))
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_extras_and_properties_reach_pytest_html_and_junitxml(pytester):
    pytest.importorskip("pytest_html")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile("def test_chaos():\n    pass\n")
    html = pytester.path / "report.html"
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        f"--html={html}",
        "--self-contained-html",
        f"--junitxml={xml}",
    )
    result.assert_outcomes(passed=1)
    text = html.read_text()
    assert "Resilience: test_scenario[0]" in text  # the block, inside pytest-html's data blob
    assert "seconds from fault injection (T0)" in text
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).getroot().iter("property")}
    assert props["time_to_recover_s"] == "12"
    assert props["healed_by"] == "engine"


NOTICES = [
    "probes: built-in (prometheus is not on PATH)",
    "ledger #3 latency (500 ms on postgres) left open by pid 41: revert failed: no server\n"
    "the embedded Toxiproxy died with its session",
]


def test_notices_are_readable_console_lines_before_the_summary(tmp_path):
    run = ChaosRun(ChaosSettings(ledger=tmp_path / "ledger.sqlite"))
    run.notices.extend(NOTICES)
    run.results.append(sample_result(0, recover_after=12))
    lines = resilience_section_lines(run)
    assert lines[:3] == [
        "notice: probes: built-in (prometheus is not on PATH)",
        "notice: ledger #3 latency (500 ms on postgres) left open by pid 41: revert failed: "
        "no server",
        "        the embedded Toxiproxy died with its session",
    ]
    assert lines[3].startswith("1 chaos scenario(s): 1 passed")
    assert not any("[" in line and "'" in line for line in lines[:3])  # no list repr
    assert notice_lines([["nested", "notices"], "", None]) == [
        "notice: nested",
        "notice: notices",
    ]


def test_a_failed_scenario_whose_slo_had_no_data_says_so_not_violated():
    from dataclasses import replace

    from pytest_resilience.report.model import SLOVerdict

    result = sample_result(1, healed_by="none", recover_after=None)
    silent = SLOVerdict("error-rate", "error rate <= 1.00% over 5 s", held=False)
    lines = terminal_summary_lines([replace(result, slo_verdicts=[silent])])
    (failed,) = [line for line in lines if "FAILED" in line]
    assert failed.endswith("SLO 'error-rate' had no data"), failed
