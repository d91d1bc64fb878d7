"""Resilience figures as JUnit XML properties, so CI dashboards can chart MTTR per test.

The values are strings (JUnit properties are); a figure that does not exist (never
detected, never recovered) is the empty string, never "None". Pass the list to
``report.user_properties`` of the teardown report, which is the one pytest's junitxml
reads properties from.
"""

from __future__ import annotations

from ..redaction import redact, redact_document
from .impact import error_rate_downtime_s
from .model import ScenarioResult

__all__ = ["junit_properties"]


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
        outcome = "ok" if action.ok else "failed" if action.ok is not None else "unfinished"
        properties.append(
            (
                f"action.{index}",
                f"{action.strategy}/{action.action} {outcome}; verify {action.verify or 'none'}",
            )
        )
    return [(redact_document(name), redact_document(value)) for name, value in properties]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
