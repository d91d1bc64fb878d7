"""The Jinja2 environment and the formatting every report view shares.

Jinja2 (already required by pytest-html) autoescapes every value, so text from timelines
(event names, error messages) cannot inject markup; only the SVG charts are marked safe.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from ..redaction import redact_text
from .model import SLOVerdict

__all__ = [
    "breakable",
    "environment",
    "format_seconds",
    "format_worst",
    "healed_label",
    "readable_notices",
    "template_text",
]

TEMPLATES = Path(__file__).parent / "templates"

HEALED_LABELS = {
    "engine": "engine (auto-remediation)",
    "platform": "platform (restart / replacement)",
    "fault_end": "fault end (nothing healed it)",
    None: "not healed",
}


def format_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} s" if abs(value) < 600 else f"{value / 60:.1f} min"


def format_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def format_number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if float(value).is_integer() else f"{value:.3g}"


def format_signed(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:+g}" if float(value).is_integer() else f"{value:+.3g}"


def format_metric(value: float | None, key: str) -> str:
    """A trend figure in its unit: rates in %, durations in s, counts and scores plain."""
    if key.endswith("_rate"):
        return format_rate(value)
    if key.endswith("_s"):
        return format_seconds(value)
    return format_number(value)


def format_measure(measure: Mapping[str, Any] | None, verb: str = "seen") -> str:
    """One side's figure of the with/without comparison: ``8.2 s``, or for a censored one
    ``not recovered within 40.0 s`` (``verb`` says what was not seen)."""
    if not measure or measure.get("value") is None:
        return "—"
    value = float(measure["value"])
    if measure.get("censored"):
        return f"not {verb} within {format_seconds(value)}"
    return format_seconds(value)


def format_bound(aggregate: Mapping[str, Any] | None, unit: str = "s") -> str:
    """A mean or a sum of the comparison: ``≥ 40.0 s`` when a censored figure is in it."""
    if not aggregate or aggregate.get("value") is None:
        return "—"
    value = float(aggregate["value"])
    text = {"s": format_seconds, "rate": format_rate}.get(unit, format_number)(value)
    return f"≥ {text}" if aggregate.get("at_least") else text


def format_reduction(reduction: Mapping[str, Any] | None) -> str:
    """A reduction of the comparison: ``75%``, or ``≥ 75%`` / ``≤ 75%`` when bounded."""
    if not reduction or reduction.get("pct") is None:
        return "—"
    prefix = {"at least": "≥ ", "at most": "≤ "}.get(str(reduction.get("bound")), "")
    return f"{prefix}{float(reduction['pct']):.0f}%"


def format_change(reduction: Mapping[str, Any] | None) -> str:
    """A reduction read as a change: ``≥ 42% less``, ``4% more`` (the engine made it worse)."""
    if not reduction or reduction.get("pct") is None:
        return ""
    pct = float(reduction["pct"])
    if pct < 0:
        flipped = {"at least": "at most", "at most": "at least"}.get(str(reduction.get("bound")))
        return f"{format_reduction({'pct': -pct, 'bound': flipped})} more"
    return f"{format_reduction(reduction)} less"


def format_score(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_worst(verdict: SLOVerdict) -> str:
    """Worst value in the objective's own unit (error rate in %, latency in ms)."""
    value = verdict.worst_value
    if value is None:
        return "—"
    objective = verdict.objective.lower()
    if objective.startswith(("error rate", "availability")):
        return f"{value:.2%}"
    if "latency" in objective:
        return f"{value:.0f} ms"
    return f"{value:g}"


def readable_notices(value: object) -> list[str]:
    """The run's notices as text a person reads, one string per notice, never a list's repr.

    Takes what ``run_info["notices"]`` holds (a list of strings, as the plugin gives it) and
    anything else a caller put there: nested lists give one notice per item, blank ones go.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, Mapping):
        return [f"{key}: {text}" for key, item in value.items() for text in readable_notices(item)]
    if isinstance(value, Iterable):
        return [text for item in value for text in readable_notices(item)]
    return [str(value)]


_BREAK_AFTER = re.compile(r"(::|/|_|\[|,)")


def breakable(value: object) -> Markup:
    """``value`` escaped, with a line-break chance (``<wbr>``) after ``/ :: _ [ ,``.

    Node ids and PromQL have no space to wrap at, so one of them would set the width of its
    whole table; this lets them wrap at their own joints instead of at a random letter
    (``<wbr>`` is not text: find-in-page and copy see the id whole). Secrets are masked
    first: the page's last literal pass cannot see one split by a ``<wbr>``.
    """
    return Markup(_BREAK_AFTER.sub(r"\1<wbr>", str(escape(redact_text(str(value))))))


def short_name(nodeid: str) -> str:
    """The test's own name, without its file: ``test_x[baseline]``."""
    return nodeid.rsplit("::", 1)[-1]


def healed_label(healed_by: str | None) -> str:
    return HEALED_LABELS.get(healed_by, str(healed_by))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    env.filters.update(
        secs=format_seconds,
        rate=format_rate,
        score=format_score,
        num=format_number,
        signed=format_signed,
        metric=format_metric,
        notices=readable_notices,
        breakable=breakable,
        measure=format_measure,
        bound=format_bound,
        reduction=format_reduction,
        change=format_change,
        short=short_name,
    )
    env.globals.update(worst=format_worst, healed_label=healed_label)
    return env


@functools.cache
def template_text(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")
