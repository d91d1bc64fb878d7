"""Charts as inline SVG drawn by matplotlib: the scenario timeline and the run trend.

Why matplotlib's SVG backend: the pytest-html report inserts extras with
``insertAdjacentHTML``, which never runs a ``<script>``, so a JS chart library would show
nothing there; a static SVG shows in pytest-html, in the standalone report, offline, and
prints sharp. Text is kept as ``<text>`` (``svg.fonttype = none``): smaller, selectable,
and ``--dump-dom`` can read it.

Dark and light viewers: the background is transparent, the series use mid-tone colours
that read on both, and everything that would be black (axes, ticks, labels, legend text)
is drawn in a sentinel colour replaced by ``currentColor``, so the chart takes the text
colour of the page it sits in (dark page: light axes; print: black). svg.py makes
matplotlib's output compact enough for hundreds of charts on one page.

Speed: building a matplotlib figure costs more than drawing it (tick objects, axes), so
one figure per thread is reused and only its artists are replaced (about 2x faster), and a
scenario's chart is cached by the identity of its result: the standalone report at session
end reuses the SVG already drawn for the pytest-html extra at teardown. The chart shows
numbers and fixed labels only, never text from the timeline, so it cannot leak a secret.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..timeline import (
    ACTION_FINISHED,
    ACTION_STARTED,
    ALERT_FIRED,
    FAULT_INJECTED,
    FAULT_REVERTED,
    POD_DIED,
    POD_READY,
    SLO_BREACHED,
    SLO_RECOVERED,
)
from .impact import load_points
from .model import ScenarioResult
from .svg import FOREGROUND, figure_svg

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "COLOURS",
    "LegendEntry",
    "chart_legend",
    "timeline_chart_svg",
    "trend_chart_svg",
]

COLOURS = {
    "error": "#e4572e",
    "p99": "#4c8bf5",
    "rps": "#2a9d8f",
    "fault": "#e4572e",
    "detect": "#e9a23b",
    "action": "#9b6bd6",
    "action_failed": "#d1495b",
    "pod_died": "#8d99ae",
    "pod_ready": "#2a9d8f",
    "recovered": "#43aa6b",
    "score": "#4c8bf5",
    "mttr": "#e9a23b",
}
_CACHE_LIMIT = 2048
_cache: dict[int, tuple[ScenarioResult, str]] = {}
_cache_lock = threading.Lock()
_local = threading.local()


def timeline_chart_svg(result: ScenarioResult) -> str:
    """The scenario's SLO series (error rate, p99, throughput) with its marks, as inline SVG.

    x is seconds from T0 (the first fault); marks: fault window, alerts and SLO breaches
    (detection), each remediation action (started..finished), pod died / ready, SLO
    recovered.
    """
    key = id(result)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is result:
            return hit[1]
    svg = _render_timeline(result)
    with _cache_lock:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.pop(next(iter(_cache)))
        _cache[key] = (result, svg)  # holding the result keeps its id from being reused
    return svg


def clear_chart_cache() -> None:
    with _cache_lock:
        _cache.clear()


def trend_chart_svg(
    labels: Sequence[str], scores: Sequence[float | None], mttr: Sequence[float | None]
) -> str:
    """Score and mean time to recover over the last runs (oldest first)."""
    from matplotlib.figure import Figure

    _configure()
    fig = Figure(figsize=(8.5, 3.2))
    score_ax, mttr_ax = fig.subplots(1, 2)
    x = list(range(len(labels)))
    for ax, values, colour, title in (
        (score_ax, scores, COLOURS["score"], "resilience score (0-100)"),
        (mttr_ax, mttr, COLOURS["mttr"], "mean time to recover (s)"),
    ):
        points = [(i, v) for i, v in zip(x, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), color=colour, marker="o", lw=1.8)
        ax.set_title(title, fontsize=10, color=FOREGROUND)
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=9)
        _style_axes(ax)
    score_ax.set_ylim(0, 100)
    mttr_ax.set_ylim(bottom=0)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.3, top=0.88, wspace=0.2)
    return figure_svg(fig, "trend of score and mean time to recover over the last runs")


def _render_timeline(result: ScenarioResult) -> str:
    with _figure_lock():
        fig, axes = _timeline_figure()
        _draw_timeline(fig, axes, result)
        label = f"timeline of {len(axes)} SLO series with fault and remediation marks"
        return figure_svg(fig, label)


def _figure_lock() -> threading.Lock:
    lock = getattr(_local, "lock", None)
    if lock is None:
        lock = _local.lock = threading.Lock()
    return lock


def _timeline_figure() -> tuple[Figure, list[Axes]]:
    fig = getattr(_local, "figure", None)
    if fig is None:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        _configure()
        fig = Figure(figsize=(8.5, 4.4))
        axes = list(fig.subplots(3, 1, sharex=True))
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.1, top=0.97, hspace=0.12)
        # Styling touches every tick object: once per figure, not once per chart.
        for ax, label in zip(axes, _PANEL_LABELS, strict=True):
            _style_axes(ax)
            ax.yaxis.set_major_locator(MaxNLocator(3, min_n_ticks=2))
            ax.set_ylabel(label, color=FOREGROUND, fontsize=9)
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        axes[-1].xaxis.set_major_locator(MaxNLocator(10))
        _local.figure, _local.axes = fig, axes
    return fig, _local.axes


def _draw_timeline(fig: Figure, axes: list[Axes], result: ScenarioResult) -> None:
    for ax in axes:
        for artist in [*ax.lines, *ax.collections, *ax.patches, *ax.texts]:
            artist.remove()

    points = load_points(result)
    marks = _marks(result)
    levels = slo_levels(result)
    panels = tuple(
        zip(
            (points.error_rate_pct, points.p99_ms, points.rps),
            (COLOURS["error"], COLOURS["p99"], COLOURS["rps"]),
            _PANEL_LABELS,
            strict=True,
        )
    )
    xs = points.t + [x for _, xs_ in marks.items() for x in _flat(xs_)]
    xs += [level.worst_at for level in levels if level.worst_at is not None]
    lo, hi = (min(xs), max(xs)) if xs else (-1.0, 1.0)
    if hi - lo < 1:
        lo, hi = lo - 1, hi + 1
    for ax, (values, colour, label) in zip(axes, panels, strict=True):
        pairs = [(t, v) for t, v in zip(points.t, values, strict=True) if v is not None]
        if pairs:
            ax.plot(*zip(*pairs, strict=True), color=colour, lw=1.6)
        else:
            ax.text(
                0.5,
                0.5,
                "no samples",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color=FOREGROUND,
                alpha=0.6,
                fontsize=9,
            )
        mine = [level for level in levels if level.panel == label]
        for level in mine:
            _draw_level(ax, level, colour)
        # Explicit limits, never autoscale: set_ylim switches autoscaling off for good, and
        # this figure is reused, so an autoscaled panel kept the previous chart's range.
        ax.set_ylim(
            *_y_range(
                [v for _, v in pairs],
                [v for level in mine for v in (level.bound, level.worst) if v is not None],
            )
        )
        _draw_marks(ax, marks, hi)
    axes[-1].set_xlim(lo, hi)
    axes[-1].set_xlabel(_X_LABELS[result.time_origin], color=FOREGROUND, fontsize=9)


#: room above the highest value a panel shows, so a peak is never drawn on the frame
HEADROOM = 1.12

_X_LABELS = {
    "T0": "seconds from fault injection (T0)",
    "start": "seconds from scenario start (no fault injected)",
}


def _y_range(series: Sequence[float], levels: Sequence[float]) -> tuple[float, float]:
    """From 0 (or the lowest value) to the highest of the series, bounds and worst values."""
    values = [*series, *levels]
    bottom = min(0.0, *values) if values else 0.0
    top = max(values) if values else 0.0
    if top <= bottom:
        return bottom, bottom + 1.0
    return bottom, top + (HEADROOM - 1) * (top - bottom)


@dataclass(frozen=True)
class SLOLevel:
    """An SLO's bound and worst value in a panel's unit, where a panel plots its signal."""

    panel: str
    name: str
    bound: float
    worst: float | None
    worst_at: float | None


# Objective.describe() texts of the signals a panel plots (the load's error rate and p99).
_PANEL_OBJECTIVES = (
    ("errors %", re.compile(r"^error rate <= (?P<bound>[0-9.]+)%"), 100.0),
    ("p99 ms", re.compile(r"^p99 latency <= (?P<bound>[0-9.]+) ms"), 1.0),
)


def slo_levels(result: ScenarioResult) -> list[SLOLevel]:
    """Bounds and worst values of the SLOs whose signal a panel plots, in the panel's unit.

    Other SLOs (p95 latency, availability, PromQL) have no panel of their own and are left
    to the table: a p95 bound drawn over the p99 line would tell the reader a wrong story.
    """
    levels = []
    for verdict in result.slo_verdicts:
        for panel, pattern, scale in _PANEL_OBJECTIVES:
            found = pattern.match(verdict.objective)
            if found:
                worst = verdict.worst_value
                levels.append(
                    SLOLevel(
                        panel=panel,
                        name=verdict.name,
                        bound=float(found["bound"]),
                        worst=None if worst is None else scale * worst,
                        worst_at=verdict.worst_at,
                    )
                )
    return levels


def _draw_level(ax: Axes, level: SLOLevel, colour: str) -> None:
    """The bound as a dashed line across the panel, the worst value as a marker at its time."""
    ax.axhline(level.bound, color=FOREGROUND, ls="--", lw=1.0, alpha=0.7, label="_slo_bound")
    if level.worst is not None and level.worst_at is not None:
        ax.plot(
            [level.worst_at],
            [level.worst],
            ls="none",
            marker="v",
            ms=6,
            color=colour,
            markeredgecolor=FOREGROUND,
            markeredgewidth=0.6,
            label="_slo_worst",
        )


_PANEL_LABELS = ("errors %", "p99 ms", "req/s")
_MARK_LABELS = {
    "fault": "fault window",
    "alert": "alert fired",
    "breach": "SLO breached",
    "action": "action",
    "action_failed": "action failed",
    "would_act": "engine would have acted (dry run)",
    "pod_died": "pod died",
    "pod_ready": "pod ready",
    "recovered": "SLO recovered",
}


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: str
    #: "line", "span" or "marker"
    shape: str
    #: CSS border style for lines ("solid", "dashed", "dotted"); "hatched" for failed spans
    style: str


_CSS_STYLE = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dashed"}


def chart_legend(result: ScenarioResult) -> list[LegendEntry]:
    """The chart's key, for the HTML around it (an SVG legend cost a third of render time)."""
    entries = [
        LegendEntry(label, colour, "line", "solid")
        for label, colour in zip(
            _PANEL_LABELS, (COLOURS["error"], COLOURS["p99"], COLOURS["rps"]), strict=True
        )
    ]
    marks = _marks(result)
    for name, (shape, colour, style, extra) in MARK_STYLES.items():
        if marks[name]:
            css = ("hatched" if extra else "solid") if shape == "span" else _CSS_STYLE[style]
            entries.append(LegendEntry(_MARK_LABELS[name], colour, shape, css))
    levels = slo_levels(result)
    if levels:
        entries.append(LegendEntry("SLO bound", "currentColor", "line", "dashed"))
    if any(level.worst is not None and level.worst_at is not None for level in levels):
        entries.append(LegendEntry("SLO worst", "currentColor", "marker", "solid"))
    return entries


def _marks(result: ScenarioResult) -> dict[str, list[Any]]:
    timeline = result.timeline
    zero = result.zero
    marks: dict[str, list[Any]] = {k: [] for k in _MARK_LABELS}
    open_actions: dict[Any, list[float]] = {}
    fault_open: list[float] = []
    for event in timeline.get("events", ()):
        kind, at = event["kind"], round(event["at"] - zero, 3)
        detail = event.get("detail") or {}
        if kind == FAULT_INJECTED:
            fault_open.append(at)
        elif kind == FAULT_REVERTED and fault_open:
            marks["fault"].append((fault_open.pop(0), at))
        elif kind == ALERT_FIRED:
            marks["alert"].append(at)
        elif kind == SLO_BREACHED:
            marks["breach"].append(at)
        elif kind == SLO_RECOVERED:
            marks["recovered"].append(at)
        elif kind == POD_DIED:
            marks["pod_died"].append(at)
        elif kind == POD_READY:
            marks["pod_ready"].append(at)
        elif kind in (ACTION_STARTED, ACTION_FINISHED) and detail.get("dry_run"):
            if kind == ACTION_STARTED:  # decided, not done: a mark, not an action span
                marks["would_act"].append(at)
        elif kind == ACTION_STARTED:
            key = detail.get("action_id") or event.get("name", "")
            open_actions.setdefault(key, []).append(at)
        elif kind == ACTION_FINISHED:
            key = detail.get("action_id") or event.get("name", "")
            started = open_actions.get(key) or [at]
            start = started.pop(0)
            ok = detail.get("ok", True)
            marks["action" if ok else "action_failed"].append((start, at))
    marks["fault"].extend((start, None) for start in fault_open)  # never reverted: to the end
    for starts in open_actions.values():
        marks["action"].extend((start, None) for start in starts)
    return marks


#: how each mark is drawn: ("span", colour, alpha, hatch) or ("line", colour, style, width)
MARK_STYLES: dict[str, tuple[Any, ...]] = {
    "fault": ("span", COLOURS["fault"], 0.12, None),
    "action": ("span", COLOURS["action"], 0.22, None),
    "action_failed": ("span", COLOURS["action_failed"], 0.22, "//"),
    "would_act": ("line", COLOURS["action"], "--", 1.2),
    "alert": ("line", COLOURS["detect"], "--", 1.4),
    "breach": ("line", COLOURS["detect"], ":", 1.2),
    "pod_died": ("line", COLOURS["pod_died"], "-.", 1.2),
    "pod_ready": ("line", COLOURS["pod_ready"], ":", 1.2),
    "recovered": ("line", COLOURS["recovered"], "-", 1.6),
}


def _draw_marks(ax: Axes, marks: dict[str, list[Any]], end: float) -> None:
    """All marks of one panel as two collections: one artist each, not one per event."""
    from matplotlib.collections import LineCollection, PolyCollection

    transform = ax.get_xaxis_transform()  # x in data, y in 0..1 of the panel
    spans: dict[str | None, tuple[list[Any], list[Any]]] = {}
    segments: list[Any] = []
    colours: list[str] = []
    styles: list[str] = []
    widths: list[float] = []
    for name, (shape, colour, style, extra) in MARK_STYLES.items():
        for mark in marks[name]:
            if shape == "span":
                start, stop = mark
                stop = max(end if stop is None else stop, start + 0.25)
                polys, faces = spans.setdefault(extra, ([], []))
                polys.append([(start, 0), (stop, 0), (stop, 1), (start, 1)])
                faces.append(_rgba(colour, style))
            else:
                segments.append([(mark, 0), (mark, 1)])
                colours.append(colour)
                styles.append(style)
                widths.append(extra)
    for hatch, (polys, faces) in spans.items():
        ax.add_collection(
            PolyCollection(
                polys,
                facecolors=faces,
                edgecolors="none",
                linewidths=0,
                transform=transform,
                hatch=hatch,
            ),
            autolim=False,
        )
    if segments:
        ax.add_collection(
            LineCollection(
                segments, colors=colours, linestyles=styles, linewidths=widths, transform=transform
            ),
            autolim=False,
        )


def _rgba(colour: str, alpha: float) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour, alpha)


def _style_axes(ax: Axes) -> None:
    ax.set_facecolor("none")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    for spine in ("left", "bottom"):
        ax.spines[spine].set_color(FOREGROUND)
        ax.spines[spine].set_alpha(0.6)
    ax.tick_params(colors=FOREGROUND, labelsize=9, labelcolor=FOREGROUND)
    ax.grid(True, axis="y", color=FOREGROUND, alpha=0.15, lw=0.6)


def _configure() -> None:
    import matplotlib

    matplotlib.rcParams.update(
        {
            "svg.fonttype": "none",  # <text>, not glyph paths: 3x smaller, selectable
            "svg.hashsalt": "pytest-resilience",  # stable ids, so reports diff cleanly
            "font.family": "sans-serif",
            "axes.unicode_minus": False,
        }
    )


def _flat(values: list[Any]) -> list[float]:
    out: list[float] = []
    for value in values:
        if isinstance(value, tuple):
            out.extend(v for v in value if v is not None)
        else:
            out.append(value)
    return out
