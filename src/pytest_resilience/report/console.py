"""The console side: live phase lines while a scenario runs, and a short run summary.

Lines are plain text without colour codes; the lead writes them through pytest's terminal
reporter, which adds colour where the terminal takes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..redaction import redact_text
from .model import ScenarioResult, SLOVerdict
from .rendering import format_rate, format_score, format_seconds, readable_notices
from .score import run_metrics

__all__ = ["PHASES", "PHASE_OF_EVENT", "notice_lines", "phase_line", "terminal_summary_lines"]

#: phase key -> what the line says; unknown phases are printed as given
PHASES = {
    "steady_state": "steady state",
    "inject": "inject fault",
    "detect": "detect",
    "remediate": "remediate",
    "verify": "verify",
    "escalate": "escalate",
    "recover": "recover",
    "revert": "revert fault",
}

#: timeline event kind -> the phase a live line announces when it lands
PHASE_OF_EVENT = {
    "steady_state": "steady_state",
    "fault_injected": "inject",
    "alert_fired": "detect",
    "slo_breached": "detect",
    "action_started": "remediate",
    "verified": "verify",
    "escalated": "escalate",
    "slo_recovered": "recover",
    "fault_reverted": "revert",
}


def phase_line(phase: str, scenario: str, t: float | None) -> str:
    """One live line: ``[chaos] T+12.3s  remediate      test_pod_kill``.

    ``t`` is seconds from T0 (negative before the fault, None before anything happened).
    """
    when = "T" if t is None else f"T{t:+.1f}s"
    label = PHASES.get(phase, phase.replace("_", " "))
    return redact_text(f"[chaos] {when:>9}  {label:<13}  {scenario}")


def notice_lines(notices: Iterable[object]) -> list[str]:
    """The run's notices as console lines: ``notice: <text>``, one per notice.

    A notice of several lines keeps them, indented under its first, so a multi-line
    message (a revert that failed with its reason) stays one readable block.
    """
    lines: list[str] = []
    for notice in readable_notices(list(notices)):
        first, *rest = notice.splitlines()
        lines.append(f"notice: {first}")
        lines.extend(f"        {line}" for line in rest if line.strip())
    return [redact_text(line) for line in lines]


def terminal_summary_lines(results: Sequence[ScenarioResult], *, slowest: int = 3) -> list[str]:
    """A few lines for ``pytest_terminal_summary``; empty when no chaos test ran."""
    if not results:
        return []
    baselines = [r for r in results if r.is_baseline]
    results = [r for r in results if not r.is_baseline]
    m = run_metrics(results)
    lines = [
        f"{m.scenarios} chaos scenario(s): {m.passed} passed, {m.failed} failed, "
        f"{m.errors} error(s), {m.skipped} skipped; resilience score {format_score(m.score)}/100",
        f"mean time to detect {format_seconds(m.mean_time_to_detect_s)}, "
        f"to recover {format_seconds(m.mean_time_to_recover_s)}; "
        f"auto-remediation {format_rate(m.auto_remediation_rate)} "
        f"({m.healed_by_engine}/{m.with_fault}); pages {m.pages_sent}; "
        f"downtime {format_seconds(m.downtime_s)}",
    ]
    timed = sorted(
        (r for r in results if r.figures.time_to_recover is not None),
        key=lambda r: r.figures.time_to_recover or 0.0,
        reverse=True,
    )
    for result in timed[:slowest]:
        f = result.figures
        lines.append(
            f"  recovered in {format_seconds(f.time_to_recover)} "
            f"(healed by {f.healed_by or 'nothing'}): {result.nodeid}"
        )
    for result in results:
        if result.outcome in ("failed", "error"):
            broken = [v for v in result.slo_verdicts if not v.held]
            why = ", ".join(_broken(v) for v in broken) or result.outcome
            lines.append(f"  {result.outcome.upper()}: {result.nodeid}: {why}")
    if baselines:
        lines.extend(comparison_lines([*results, *baselines]))
    return [redact_text(line) for line in lines]


def comparison_lines(results: Sequence[ScenarioResult]) -> list[str]:
    """``--remediation-baseline``: the before/after table in a few lines (``≥``: censored)."""
    from .comparison import build_comparison
    from .rendering import format_bound, format_reduction

    data = build_comparison(results)
    lines = [f"with vs without automation ({len(data['pairs'])} scenario(s) compared):"]
    for row in data["rows"]:
        unit = {"auto_remediation_rate": "rate", "pages": "n"}.get(row["key"], "s")
        change = format_reduction(row["reduction"])
        if row["key"] == "pages":
            change = f"{row['avoided']} avoided"
        if "subset" in row:
            sub = row["subset"]
            change = (
                f"{change}; {format_reduction(sub['reduction'])} over the {sub['n']} "
                "whose engine run showed it"
            ).removeprefix("—; ")
        lines.append(
            f"  {row['label']}: without {format_bound(row['without'], unit)}, "
            f"with {format_bound(row['with'], unit)}" + ("" if change == "—" else f" ({change})")
        )
    for left in data["not_compared"]:
        lines.append(f"  not compared: {left['twin']}: {left['reason']}")
    return lines


def _broken(verdict: SLOVerdict) -> str:
    """An SLO with no reading did not hold, but nothing showed it violated either."""
    return f"SLO {verdict.name!r} " + ("had no data" if verdict.worst_value is None else "violated")
