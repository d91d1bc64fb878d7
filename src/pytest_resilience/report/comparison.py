"""With vs without automation: each scenario's automated run against its baseline twin.

``--remediation-baseline`` runs every scenario that uses the engine twice (see
``pytest_resilience.baseline``): once with the engine acting, once with it observing only
(dry run, no pager) on a fresh target. This module puts the two timelines side by side.

Per side, read from that side's timeline and nothing else, in seconds from T0:
detect (first alert, else first SLO breach), mitigate (first fix by the engine or the
platform: the fault's end is not a fix), recover (the last SLO recovery, every SLO holding
from then on), customer-facing downtime (seconds an error-rate SLO was in breach), pages.

**Observation.** A side is watched from T0 until the scenario reverted its fault or stopped
its load (``Timeline.observed_until``): after that, the timeline shows the test ending the
fault, not the system healing.

**Censoring.** A figure whose event was not seen while watched is *censored*, never dropped:
"not recovered within N s", with N = the smaller of the scenario's recovery window
(``slo.assert_recovers(within_s=...)``, YAML ``recovery.within_s``, counted from T0; the
twin's when this run stopped at an earlier assertion) and the time it was watched.
Downtime with a breach still open at the end is censored at what was seen.

**Means.** A censored figure enters a mean (or a sum) at its bound N, and such a mean is a
lower bound, shown as ">= X": the true mean is at least X.

**Reduction** = (without - with) / without: exact when neither side is censored, "at least"
when only the baseline is (a longer baseline only raises it), "at most" when only the
automated run is, unknown when both are. Where some automated runs are censored too (the
engine did not fix it: a human would have), a row also gives the figures over the others
(``subset``), labelled as such.

**Pages.** With: the pages the engine sent. Without: each distinct alert (name, target)
that fired in the baseline, since without automation an alert goes to the on-call.
Pages avoided = without - with.

A pair is compared when both runs injected a fault and neither was skipped or errored; the
others are listed with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..timeline import ALERT_FIRED, RECOVERY_WINDOW, Timeline
from .impact import downtime_until
from .model import ScenarioResult

__all__ = [
    "CENSORING_RULE",
    "SEED",
    "Measure",
    "Pair",
    "Side",
    "build_comparison",
    "compare",
    "recovery_window_s",
    "side_of",
]

CENSORING_RULE = (
    "A figure not seen while the run was watched (from T0 until the scenario reverted its "
    "fault or stopped its load) is censored at N = the smaller of the scenario's recovery "
    "window and the time watched, shown as 'not ... within N s'. Censored figures enter "
    "means and sums at N, which are then lower bounds, shown as '≥'. Reduction = (without - "
    "with) / without; '≥' when only the baseline is censored, '≤' when only the automated "
    "run is. Pages without automation: each distinct alert that fired in the baseline "
    "(without automation an alert goes to the on-call)."
)

#: what the seed promised, by row key (shown beside this run's figures)
SEED = {
    "time_to_recover": "60 → 15 min (-75%)",
    "auto_remediation_rate": "0% → 70%",
}

_FIGURES = ("time_to_detect", "time_to_mitigate", "time_to_recover")
_LABELS = {
    "time_to_detect": "mean time to respond (detect)",
    "time_to_mitigate": "mean time to mitigate",
    "time_to_recover": "mean time to resolve (MTTR)",
    "auto_remediation_rate": "auto-remediation rate",
    "pages": "pages to the on-call",
    "downtime": "customer-facing downtime",
}
_EPSILON = 1e-6


@dataclass(frozen=True)
class Measure:
    """One figure of one run. ``censored``: the event was not seen; ``value`` is the bound
    N of "not within N s" (a lower bound of the true figure)."""

    value: float | None
    censored: bool = False


@dataclass(frozen=True)
class Side:
    """One run (automated or baseline) of a scenario, as the comparison reads it."""

    nodeid: str
    mode: str
    outcome: str
    detect: Measure
    mitigate: Measure
    recover: Measure
    downtime: Measure
    pages: int
    healed_by: str | None
    #: the scenario's recovery window from T0, None when it stated none
    window_s: float | None
    #: seconds from T0 until the run stopped being watched (fault reverted, load stopped)
    observed_s: float | None
    #: N of every censored time figure: min(window, observed)
    bound_s: float | None
    expected_failure: str = ""

    def measure(self, key: str) -> Measure:
        return {
            "time_to_detect": self.detect,
            "time_to_mitigate": self.mitigate,
            "time_to_recover": self.recover,
            "downtime": self.downtime,
        }[key]


@dataclass(frozen=True)
class Reduction:
    #: percent, (without - with) / without; None when it cannot be told
    pct: float | None
    #: "exact", "at least", "at most", or None (unknown)
    bound: str | None


@dataclass(frozen=True)
class Pair:
    scenario: str
    automated: Side
    baseline: Side
    reductions: dict[str, Reduction] = field(default_factory=dict)

    @property
    def pages_avoided(self) -> int:
        return self.baseline.pages - self.automated.pages


def side_of(result: ScenarioResult, *, window_s: float | None = None) -> Side:
    """The comparison's figures of one run, from its timeline (see the module docstring).

    ``window_s``: the scenario's recovery window when this run did not reach the line that
    states it (a baseline whose test stopped at an earlier assertion); its twin's.
    """
    timeline = Timeline.from_dict(result.timeline)
    t0 = timeline.t0
    until = timeline.observed_until()
    figures = result.figures
    if t0 is None or until is None:
        none = Measure(None)
        return Side(
            result.nodeid, result.mode, result.outcome, none, none, none, none,
            _pages(result, timeline), figures.healed_by, None, None, None,
            result.expected_failure,
        )  # fmt: skip
    observed = round(max(0.0, until - t0), 3)
    window = _window_s(timeline, t0)
    window = window if window is not None else window_s
    bound = round(min(observed, window), 3) if window is not None else observed

    def seen(value: float | None, *, counts: bool = True) -> Measure:
        if counts and value is not None and value <= observed + _EPSILON:
            return Measure(value)
        return Measure(bound, censored=True)

    downtime, still_open = downtime_until(result, until)
    return Side(
        nodeid=result.nodeid,
        mode=result.mode,
        outcome=result.outcome,
        detect=seen(figures.time_to_detect),
        mitigate=seen(figures.time_to_mitigate, counts=figures.healed_by in ("engine", "platform")),
        # without a breach the timeline's recovery is the mitigation: seen while watched too
        recover=seen(figures.time_to_recover),
        downtime=Measure(downtime, censored=still_open),
        pages=_pages(result, timeline),
        healed_by=figures.healed_by,
        window_s=window,
        observed_s=observed,
        bound_s=bound,
        expected_failure=result.expected_failure,
    )


def compare(results: Sequence[ScenarioResult]) -> tuple[list[Pair], list[dict[str, str]]]:
    """The pairs that can be compared, and the runs that cannot with the reason."""
    automated = {r.nodeid: r for r in results if not r.is_baseline}
    pairs: list[Pair] = []
    left_out: list[dict[str, str]] = []
    for baseline in (r for r in results if r.is_baseline):
        twin = automated.get(baseline.twin)
        reason = _why_not(twin, baseline)
        if reason:
            left_out.append({"nodeid": baseline.nodeid, "twin": baseline.twin, "reason": reason})
            continue
        assert twin is not None
        with_ = side_of(twin, window_s=recovery_window_s(baseline))
        without = side_of(baseline, window_s=recovery_window_s(twin))
        reductions = {
            key: _reduction(with_.measure(key), without.measure(key))
            for key in (*_FIGURES, "downtime")
        }
        pairs.append(Pair(twin.nodeid, with_, without, reductions))
    return pairs, left_out


def build_comparison(
    results: Sequence[ScenarioResult], *, anchors: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The JSON of the comparison: per pair, and the run's before/after table (``rows``)."""
    anchors = anchors or {}
    pairs, left_out = compare(results)
    ran = any(r.is_baseline for r in results)
    return {
        "ran": ran,
        "censoring": CENSORING_RULE,
        "pairs": [_pair_dict(p, anchors) for p in pairs],
        "not_compared": left_out,
        "rows": _rows(pairs) if pairs else [],
    }


# -- the run's table -----------------------------------------------------------------------


def _rows(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    scenarios = [p.scenario for p in pairs]
    rows = []
    for key in (*_FIGURES[::-1], "auto_remediation_rate", "pages", "downtime"):
        if key == "auto_remediation_rate":
            with_ = _rate([p.automated for p in pairs])
            without = _rate([p.baseline for p in pairs])
            reduction: dict[str, Any] = {"pct": None, "bound": None}
            change = None if with_ is None or without is None else round(with_ - without, 4)
            cells: dict[str, dict[str, Any]] = {
                p.scenario: {
                    "with": p.automated.healed_by,
                    "without": p.baseline.healed_by,
                }
                for p in pairs
            }
            rows.append(
                _row(key, {"value": without, "at_least": False},
                     {"value": with_, "at_least": False}, reduction, scenarios, cells,
                     change=change)
            )  # fmt: skip
            continue
        if key == "pages":
            with_total = sum(p.automated.pages for p in pairs)
            without_total = sum(p.baseline.pages for p in pairs)
            pct = (
                round(100.0 * (without_total - with_total) / without_total, 1)
                if without_total
                else None
            )
            cells = {
                p.scenario: {"with": p.automated.pages, "without": p.baseline.pages} for p in pairs
            }
            rows.append(
                _row(key, {"value": without_total, "at_least": False},
                     {"value": with_total, "at_least": False},
                     {"pct": pct, "bound": "exact" if pct is not None else None}, scenarios,
                     cells, avoided=without_total - with_total)
            )  # fmt: skip
            continue
        with_m = [p.automated.measure(key) for p in pairs]
        without_m = [p.baseline.measure(key) for p in pairs]
        aggregate = _sum if key == "downtime" else _mean
        with_agg, without_agg = aggregate(with_m), aggregate(without_m)
        reduction = asdict(_reduction(_as_measure(with_agg), _as_measure(without_agg)))
        cells = {
            p.scenario: {
                "with": asdict(p.automated.measure(key)),
                "without": asdict(p.baseline.measure(key)),
            }
            for p in pairs
        }
        subset = [p for p in pairs if not p.automated.measure(key).censored]
        extra: dict[str, Any] = {}
        if subset and len(subset) < len(pairs):
            sub_with = aggregate([p.automated.measure(key) for p in subset])
            sub_without = aggregate([p.baseline.measure(key) for p in subset])
            extra["subset"] = {
                "n": len(subset),
                "scenarios": [p.scenario for p in subset],
                "with": sub_with,
                "without": sub_without,
                "reduction": asdict(_reduction(_as_measure(sub_with), _as_measure(sub_without))),
            }
        rows.append(_row(key, without_agg, with_agg, reduction, scenarios, cells, **extra))
    return rows


def _row(
    key: str,
    without: dict[str, Any],
    with_: dict[str, Any],
    reduction: dict[str, Any],
    scenarios: list[str],
    cells: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    return {
        "key": key,
        "label": _LABELS[key],
        "without": without,
        "with": with_,
        "reduction": reduction,
        "seed": SEED.get(key, ""),
        "n": len(scenarios),
        "scenarios": scenarios,
        "cells": cells,
        **extra,
    }


def _mean(measures: Sequence[Measure]) -> dict[str, Any]:
    values = [m.value for m in measures if m.value is not None]
    if not values:
        return {"value": None, "at_least": False}
    return {
        "value": round(sum(values) / len(values), 3),
        "at_least": any(m.censored for m in measures if m.value is not None),
    }


def _sum(measures: Sequence[Measure]) -> dict[str, Any]:
    values = [m.value for m in measures if m.value is not None]
    return {
        "value": round(sum(values), 3) if values else None,
        "at_least": any(m.censored for m in measures if m.value is not None),
    }


def _as_measure(aggregate: Mapping[str, Any]) -> Measure:
    return Measure(aggregate["value"], censored=bool(aggregate["at_least"]))


def _rate(sides: Sequence[Side]) -> float | None:
    """Share of runs healed by the engine, as the metrics table defines the rate."""
    return round(sum(s.healed_by == "engine" for s in sides) / len(sides), 4) if sides else None


def _reduction(with_: Measure, without: Measure) -> Reduction:
    if with_.value is None or without.value is None or without.value <= 0:
        return Reduction(None, None)
    if with_.censored and without.censored:
        return Reduction(None, None)
    pct = round(100.0 * (without.value - with_.value) / without.value, 1)
    bound = "at least" if without.censored else "at most" if with_.censored else "exact"
    return Reduction(pct, bound)


# -- one pair ------------------------------------------------------------------------------


def _pair_dict(pair: Pair, anchors: Mapping[str, str]) -> dict[str, Any]:
    def side(s: Side) -> dict[str, Any]:
        return {**asdict(s), "anchor": anchors.get(s.nodeid, "")}

    return {
        "scenario": pair.scenario,
        "with": side(pair.automated),
        "without": side(pair.baseline),
        "reduction": {key: asdict(r) for key, r in pair.reductions.items()},
        "pages_avoided": pair.pages_avoided,
    }


def _why_not(twin: ScenarioResult | None, baseline: ScenarioResult) -> str:
    if twin is None:
        return f"its automated run {baseline.twin!r} did not report (deselected or interrupted)"
    for result in (twin, baseline):
        if result.outcome in ("skipped", "error"):
            return f"{result.mode} run {result.outcome}"
        if result.t0 is None:
            return f"{result.mode} run injected no fault"
    return ""


def recovery_window_s(result: ScenarioResult) -> float | None:
    """The recovery window a run stated (``assert_recovers``), in seconds from T0."""
    timeline = Timeline.from_dict(result.timeline)
    t0 = timeline.t0
    return None if t0 is None else _window_s(timeline, t0)


def _window_s(timeline: Timeline, t0: float) -> float | None:
    """The scenario's recovery window in seconds from T0 (the widest, if stated twice)."""
    windows = [
        (float(e.detail.get("since") or t0) - t0) + float(e.detail["within_s"])
        for e in timeline.events(RECOVERY_WINDOW)
        if e.detail.get("within_s") is not None
    ]
    return round(max(windows), 3) if windows else None


def _pages(result: ScenarioResult, timeline: Timeline) -> int:
    """Automated: the pages the engine sent. Baseline: each distinct alert that fired after
    T0 while watched; without automation each would have gone to the on-call."""
    if not result.is_baseline:
        return result.pages_sent
    t0, until = timeline.t0, timeline.observed_until()
    fired = {
        (e.name, str(e.detail.get("target", "")))
        for e in timeline.events(ALERT_FIRED, since=t0)
        if until is None or e.at <= until + _EPSILON
    }
    return len(fired)
