"""Resilience figures as JUnit XML properties, so CI dashboards can chart MTTR per test.

The values are strings (JUnit properties are); a figure that does not exist (never
detected, never recovered) is the empty string, never "None". Pass the list to
``report.user_properties`` of the teardown report, which is the one pytest's junitxml
reads properties from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..redaction import redact, redact_document
from .comparison import Measure, Pair
from .impact import error_rate_downtime_s
from .model import ScenarioResult

__all__ = ["comparison_properties", "junit_properties", "run_comparison_properties"]

_TIMES = ("time_to_recover", "time_to_mitigate", "time_to_detect")


def junit_properties(result: ScenarioResult) -> list[tuple[str, str]]:
    figures = result.figures
    safe = redact(result)
    properties = [
        ("time_to_detect_s", _num(figures.time_to_detect)),
        ("time_to_mitigate_s", _num(figures.time_to_mitigate)),
        ("time_to_recover_s", _num(figures.time_to_recover)),
        ("healed_by", figures.healed_by or ""),
        ("pages_sent", str(result.pages_sent)),
        ("downtime_s", _num(error_rate_downtime_s(result))),
        ("target", safe.target),
        ("probe_path", safe.probe_path),
        ("times_from", result.time_origin),  # "T0", or "start" when no fault was injected
        ("mode", result.mode),  # "baseline" for a --remediation-baseline twin
    ]
    for verdict in safe.slo_verdicts:
        prefix = f"slo.{verdict.name}"
        properties += [
            (prefix, "held" if verdict.held else "violated"),
            (f"{prefix}.objective", verdict.objective),
            (f"{prefix}.worst_value", _num(verdict.worst_value)),
            (f"{prefix}.worst_at_s", _num(verdict.worst_at)),
            (f"{prefix}.recovered_within_s", _num(verdict.recovered_within_s)),
        ]
    for index, action in enumerate(safe.actions, 1):
        outcome = (
            "dry_run"
            if action.dry_run
            else "ok"
            if action.ok
            else "failed"
            if action.ok is not None
            else "unfinished"
        )
        properties.append(
            (
                f"action.{index}",
                f"{action.strategy}/{action.action} {outcome}; verify {action.verify or 'none'}",
            )
        )
    return [(redact_document(name), redact_document(value)) for name, value in properties]


def comparison_properties(pair: Pair) -> list[tuple[str, str]]:
    """The with/without figures of one scenario, for its baseline item (which runs second).

    ``without.X_censored`` is "true" when the baseline never showed X while watched: the
    value is then the bound N of "not within N s" (see comparison.py for the rule).
    """
    with_, without = pair.automated, pair.baseline
    properties = [("baseline.of", pair.scenario), ("baseline.expected", without.expected_failure)]
    for key in (*_TIMES, "downtime"):
        suffix = "downtime_s" if key == "downtime" else f"{key}_s"
        for side, name in ((with_, "with"), (without, "without")):
            measure: Measure = side.measure(key)
            properties += [
                (f"{name}.{suffix}", _num(measure.value)),
                (f"{name}.{suffix.removesuffix('_s')}_censored", _flag(measure.censored)),
            ]
        reduction = pair.reductions[key]
        properties += [
            (f"reduction.{key}_pct", _num(reduction.pct)),
            (f"reduction.{key}_bound", reduction.bound or ""),
        ]
    properties += [
        ("with.pages", str(with_.pages)),
        ("without.pages", str(without.pages)),
        ("pages_avoided", str(pair.pages_avoided)),
        ("without.recovery_window_s", _num(without.window_s)),
        ("without.observed_s", _num(without.observed_s)),
    ]
    return [(redact_document(name), redact_document(value)) for name, value in properties]


def run_comparison_properties(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The run's before/after table as test-suite properties (``with_without.<row>.*``)."""
    properties: list[tuple[str, str]] = []
    for row in rows:
        prefix = f"with_without.{row['key']}"
        properties += [
            (f"{prefix}.without", _num(row["without"]["value"])),
            (f"{prefix}.without_at_least", _flag(row["without"]["at_least"])),
            (f"{prefix}.with", _num(row["with"]["value"])),
            (f"{prefix}.with_at_least", _flag(row["with"]["at_least"])),
            (f"{prefix}.reduction_pct", _num(row["reduction"]["pct"])),
            (f"{prefix}.reduction_bound", row["reduction"]["bound"] or ""),
            (f"{prefix}.scenarios", str(row["n"])),
        ]
        if "subset" in row:  # the pairs whose automated run showed the figure (not censored)
            subset = row["subset"]
            properties += [
                (f"{prefix}.subset_scenarios", str(subset["n"])),
                (f"{prefix}.subset_without", _num(subset["without"]["value"])),
                (f"{prefix}.subset_with", _num(subset["with"]["value"])),
                (f"{prefix}.subset_reduction_pct", _num(subset["reduction"]["pct"])),
                (f"{prefix}.subset_reduction_bound", subset["reduction"]["bound"] or ""),
            ]
        if "avoided" in row:
            properties.append((f"{prefix}.avoided", str(row["avoided"])))
    return [(redact_document(name), redact_document(value)) for name, value in properties]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
