"""What users saw during a scenario, read from its timeline: the load series and downtime.

Kept apart from rendering so the chart, the score and the metrics table read the same
numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..timeline import SLO_BREACHED, SLO_RECOVERED
from .model import ScenarioResult

__all__ = [
    "LoadPoints",
    "breach_spans",
    "breached",
    "downtime_until",
    "error_rate_downtime_s",
    "is_error_rate_slo",
    "load_points",
]

LOAD_SERIES = "load"


@dataclass(frozen=True)
class LoadPoints:
    """The load series as plotted: x in seconds from T0 (from the start when no fault)."""

    t: list[float]
    error_rate_pct: list[float | None]
    p99_ms: list[float | None]
    rps: list[float | None]


def load_points(result: ScenarioResult) -> LoadPoints:
    timeline = result.timeline
    zero = result.zero
    samples = _load_samples(timeline)
    t, err, p99, rps = [], [], [], []
    for sample in samples:
        values = sample.get("values") or {}
        t.append(round(sample["at"] - zero, 3))
        requests = values.get("requests")
        if "error_rate" in values:
            err.append(100.0 * values["error_rate"])
        elif requests:
            err.append(100.0 * values.get("failures", 0) / requests)
        else:
            err.append(None)
        p99.append(values.get("p99"))
        rps.append(values.get("rps"))
    return LoadPoints(t, err, p99, rps)


def breached(result: ScenarioResult) -> bool:
    """Did any SLO breach after the fault?"""
    t0 = result.t0
    if any(not v.held for v in result.slo_verdicts):
        return True
    return any(
        e["kind"] == SLO_BREACHED and (t0 is None or e["at"] >= t0)
        for e in result.timeline.get("events", ())
    )


def is_error_rate_slo(name: str, objective: str = "", signal: str | None = None) -> bool:
    if signal is not None:
        return signal == "error_rate"
    return objective.lower().startswith("error rate") or "error" in name.lower()


def error_rate_downtime_s(result: ScenarioResult) -> float:
    """Seconds during which an error-rate SLO was in breach (overlaps counted once).

    A breach never followed by a recovery lasts until the last thing the timeline saw.
    """
    end = _last_seen(result.timeline)
    spans = [(start, end if stop is None else stop) for start, stop in breach_spans(result)]
    return round(_union_length([(start, max(start, stop)) for start, stop in spans]), 3)


def downtime_until(result: ScenarioResult, until: float) -> tuple[float, bool]:
    """Error-rate breach seconds up to ``until`` (wall clock), and whether one was still
    open then (the true downtime is longer: the figure is a lower bound)."""
    spans, still_open = [], False
    for start, stop in breach_spans(result):
        if start >= until:
            continue
        if stop is None or stop > until:
            still_open = True
            stop = until
        spans.append((start, stop))
    return round(_union_length(spans), 3), still_open


def breach_spans(result: ScenarioResult) -> list[tuple[float, float | None]]:
    """[breached, recovered] wall-clock spans of the error-rate SLOs; None: never recovered."""
    events = result.timeline.get("events", ())
    objective_of = {v.name: v.objective for v in result.slo_verdicts}
    open_at: dict[str, float] = {}
    spans: list[tuple[float, float | None]] = []
    for event in events:
        if event["kind"] not in (SLO_BREACHED, SLO_RECOVERED):
            continue
        detail = event.get("detail") or {}
        name = event.get("name", "")
        objective = str(detail.get("objective") or objective_of.get(name, ""))
        if not is_error_rate_slo(name, objective, detail.get("signal")):
            continue
        if event["kind"] == SLO_BREACHED:
            open_at.setdefault(name, event["at"])
        elif name in open_at:
            spans.append((open_at.pop(name), event["at"]))
    spans.extend((start, None) for start in open_at.values())
    return spans


def _union_length(spans: Sequence[tuple[float, float]]) -> float:
    total = 0.0
    current: tuple[float, float] | None = None
    for start, stop in sorted(spans):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, stop)
        else:
            current = (current[0], max(current[1], stop))
    if current is not None:
        total += current[1] - current[0]
    return total


def _load_samples(timeline: Mapping[str, Any]) -> list[dict[str, Any]]:
    series = timeline.get("series") or {}
    if LOAD_SERIES in series:
        found: list[dict[str, Any]] = series[LOAD_SERIES]
        return found
    # A probe path that names its series otherwise still plots if it carries the same keys.
    for samples in series.values():
        if samples and {"requests", "p99"} <= set(samples[0].get("values") or {}):
            return list(samples)
    return []


def _last_seen(timeline: Mapping[str, Any]) -> float:
    times = [e["at"] for e in timeline.get("events", ())]
    for samples in (timeline.get("series") or {}).values():
        if samples:
            times.append(samples[-1]["at"])
    return max(times) if times else 0.0
