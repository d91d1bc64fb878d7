"""One chaos test's outcome as a report record, and the run's reports written from them.

The plugin builds a record per chaos test at teardown, when every fault has been
reverted and the timeline is complete; the report room renders the records.
"""

from __future__ import annotations

import platform
import time
from typing import Any

from .report import ScenarioResult
from .run import ChaosRun
from .slo import SLOMonitor
from .timeline import ALERT_FIRED, Timeline

__all__ = [
    "attach",
    "resilience_section_lines",
    "run_comparison",
    "scenario_result",
    "summary_lines",
    "write_report",
]


def scenario_result(
    *,
    nodeid: str,
    timeline: Timeline,
    slo: SLOMonitor | None,
    outcome: str,
    duration_s: float,
    run: ChaosRun,
    mode: str = "automated",
    twin: str = "",
    expected_failure: str = "",
) -> ScenarioResult:
    """``mode``/``twin``: "baseline" and its automated twin's nodeid for a
    ``--remediation-baseline`` run ("automated" and the baseline's nodeid for its twin)."""
    return ScenarioResult.from_timeline(
        timeline,
        nodeid=nodeid,
        outcome=outcome,
        duration_s=duration_s,
        slo_verdicts=slo.verdicts() if slo else (),
        target=run.settings.target,
        probe_path=_probe_path(timeline, slo),
        mode=mode,
        twin=twin,
        expected_failure=expected_failure,
    )


def _probe_path(timeline: Timeline, slo: SLOMonitor | None) -> str:
    """Per scenario: "prometheus" when its SLOs or its alerts came through Prometheus."""
    through_alertmanager = any(
        e.detail.get("source") == "alertmanager" for e in timeline.events(ALERT_FIRED)
    )
    return "prometheus" if through_alertmanager or (slo and slo.promql_names) else "built-in"


def attach(report: Any, result: ScenarioResult, run: ChaosRun | None = None) -> None:
    """Put the scenario on the teardown report: pytest-html extras and JUnit properties.

    A baseline run (which runs after its automated twin) also carries the pair's
    with/without figures.
    """
    from .report.html_extras import html_extras
    from .report.junit import junit_properties

    report.extras = [*getattr(report, "extras", []), *html_extras(result)]
    report.user_properties.extend(junit_properties(result))
    if run is not None and result.is_baseline:
        from .report.comparison import compare
        from .report.junit import comparison_properties

        twin = [r for r in run.results if r.nodeid == result.twin and not r.is_baseline]
        pairs, _ = compare([*twin[-1:], result])
        for pair in pairs:
            report.user_properties.extend(comparison_properties(pair))


def run_comparison(run: ChaosRun) -> dict[str, Any]:
    """The run's with/without table (empty ``rows`` when no baseline ran)."""
    from .report.comparison import build_comparison

    return build_comparison(run.results)


def write_report(run: ChaosRun) -> None:
    from .report.standalone import write_resilience_report

    assert run.settings.report is not None
    run.settings.report.parent.mkdir(parents=True, exist_ok=True)
    write_resilience_report(
        run.settings.report,
        run.results,
        history_dir=run.settings.history,
        run_info={
            "target": run.settings.target,
            "probe_path": run.probe_path,
            "toxiproxy": run.toxiproxy_kind,
            "host": platform.node(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "notices": list(run.notices),
        },
    )


def resilience_section_lines(run: ChaosRun) -> list[str]:
    """Everything the terminal's "resilience" section prints: the notices, then the summary."""
    from .report.console import notice_lines

    return [*notice_lines(run.notices), *summary_lines(run)]


def summary_lines(run: ChaosRun) -> list[str]:
    from .report.console import terminal_summary_lines

    lines = terminal_summary_lines(run.results) if run.results else []
    if run.settings.report is not None and run.results:
        lines.append(f"resilience report: {run.settings.report}")
    return lines
