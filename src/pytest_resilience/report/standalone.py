"""The standalone resilience report: one self-contained HTML file and its JSON twin.

The HTML opens offline and from a mail attachment: styles, charts (inline SVG) and the
few lines of script are inside it, and it names no other host. The JSON twin beside it
(same stem, ``.json``) holds the same data for other tools: the run summary, the score and
its formula, the metrics table, per-strategy figures, the trend, and every scenario
(``ScenarioResult.to_dict()`` plus its figures, downtime and score, and for a Chaos Toolkit
experiment its ``journal``: each activity run, the rollbacks and how each ended), and with
``--remediation-baseline`` the with/without comparison (``comparison``, see comparison.py),
which the HTML shows first.

With a history directory, this run's summary is saved there after the report is written,
and the report compares the run with the last runs kept there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..redaction import redact, redact_document
from . import history
from .charts import trend_chart_svg
from .comparison import build_comparison
from .html_extras import scenario_html
from .impact import error_rate_downtime_s
from .journal import journal_from_events
from .model import ScenarioResult
from .rendering import environment, template_text
from .score import RECOVERY_BUDGET_S, SCORE_FORMULA, WEIGHTS, run_metrics, strategy_stats

__all__ = ["SCHEMA", "build_report_data", "write_resilience_report"]

SCHEMA = "pytest-resilience/report/1"
_SUMMARY_KEYS = (
    "schema",
    "generated_at",
    "version",
    "run_info",
    "summary",
    "score",
    "metrics",
    "strategies",
)


def write_resilience_report(
    path: Path,
    results: Sequence[ScenarioResult],
    *,
    history_dir: Path | None,
    run_info: Mapping[str, Any],
    history_limit: int = history.DEFAULT_LIMIT,
    recovery_budget_s: float = RECOVERY_BUDGET_S,
    title: str = "Resilience report",
    now: datetime | None = None,
) -> None:
    """Write ``path`` (HTML) and ``path.with_suffix('.json')``; save the run to history."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(UTC)
    earlier = history.load_runs(history_dir, limit=history_limit)
    data = build_report_data(
        results,
        run_info=run_info,
        earlier_runs=earlier,
        history_kept=history_dir is not None,
        history_limit=history_limit,
        recovery_budget_s=recovery_budget_s,
        now=now,
    )
    html = _render_html(data, results, title=title)
    history._write_atomic(path, html)
    history._write_atomic(
        path.with_suffix(".json"),
        redact_document(_json_text(data)),
    )
    if history_dir is not None:
        history.save_run(Path(history_dir), {k: data[k] for k in _SUMMARY_KEYS}, now=now)


def build_report_data(
    results: Sequence[ScenarioResult],
    *,
    run_info: Mapping[str, Any],
    earlier_runs: Sequence[Mapping[str, Any]] = (),
    history_kept: bool = False,
    history_limit: int = history.DEFAULT_LIMIT,
    recovery_budget_s: float = RECOVERY_BUDGET_S,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data with secrets masked (the JSON twin)."""
    metrics = run_metrics(results, recovery_budget_s=recovery_budget_s)
    metric_dict = dataclasses.asdict(metrics)
    scores = metric_dict.pop("scenario_scores")
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "version": _version(),
        "run_info": redact(dict(run_info)),
        "summary": {
            key: metric_dict[key]
            for key in ("scenarios", "passed", "failed", "errors", "skipped", "score")
        },
        "score": {
            "value": metrics.score,
            "formula": SCORE_FORMULA.format(budget=recovery_budget_s),
            "weights": dict(WEIGHTS),
            "recovery_budget_s": recovery_budget_s,
        },
        "metrics": metric_dict,
        "strategies": [
            {**dataclasses.asdict(s), "success_rate": s.success_rate}
            for s in strategy_stats(results)
        ],
    }
    previous = earlier_runs[-1] if earlier_runs else None
    runs = [*earlier_runs[-(history_limit - 1) :], data] if history_limit > 1 else [data]
    data["trend"] = {
        "kept": history_kept,
        "limit": history_limit,
        "previous": (
            {k: previous.get(k) for k in ("generated_at", "history_file")} if previous else None
        ),
        "deltas": [dataclasses.asdict(d) for d in history.compare_runs(data, previous)],
        "runs": [
            {
                "generated_at": run.get("generated_at"),
                "label": history.run_label(run),
                **{
                    key: history.metric(run, key)
                    for key in (
                        "scenarios",
                        "failed",
                        "score",
                        "mean_time_to_detect_s",
                        "mean_time_to_recover_s",
                        "auto_remediation_rate",
                        "pages_sent",
                        "downtime_s",
                    )
                },
            }
            for run in runs
        ],
    }
    used: set[str] = set()
    anchors = [_anchor(result.nodeid, used) for result in results]
    data["comparison"] = redact(
        build_comparison(
            results, anchors={r.nodeid: a for r, a in zip(results, anchors, strict=True)}
        )
    )
    safe = [_plain(redact(result)) for result in results]
    data["scenarios"] = [
        {
            **masked,
            "anchor": anchor,
            "figures": dataclasses.asdict(result.figures),
            "downtime_s": error_rate_downtime_s(result),
            "score": scores.get(result.nodeid),
            **_journal(masked["timeline"]),
        }
        for result, masked, anchor in zip(results, safe, anchors, strict=True)
    ]
    return data


def _render_html(data: Mapping[str, Any], results: Sequence[ScenarioResult], *, title: str) -> str:
    runs = data["trend"]["runs"]
    trend_chart = (
        trend_chart_svg(
            [r["label"] for r in runs],
            [r["score"] for r in runs],
            [r["mean_time_to_recover_s"] for r in runs],
        )
        if len(runs) > 1
        else ""
    )
    blocks = [Markup(scenario_html(result, include_style=False)) for result in results]
    html = (
        environment()
        .get_template("standalone.html")
        .render(
            title=title,
            d=data,
            m=data["metrics"],
            blocks=blocks,
            trend_chart=Markup(trend_chart),
            page_css=Markup(template_text("page.css")),
            scenario_css=Markup(template_text("scenario.css")),
        )
    )
    return redact_document(html)


def _journal(timeline: Mapping[str, Any]) -> dict[str, Any]:
    """``{"journal": ...}`` for a Chaos Toolkit experiment (its runs, rollbacks and how each
    ended), nothing for other scenarios. Read from the masked timeline, so an excerpt cut
    short cannot keep half a secret the mask would have seen whole."""
    journal = journal_from_events(timeline)
    if journal is None:
        return {}
    return {
        "journal": {
            **dataclasses.asdict(journal),
            "rollbacks": [dataclasses.asdict(run) for run in journal.rollbacks],
            "rollbacks_line": journal.rollbacks_line,
        }
    }


def _plain(masked: ScenarioResult) -> dict[str, Any]:
    """``masked.to_dict()`` without its deep copy: :func:`redact` built every container anew."""
    data = {f.name: getattr(masked, f.name) for f in dataclasses.fields(masked)}
    data["slo_verdicts"] = [dataclasses.asdict(v) for v in masked.slo_verdicts]
    data["actions"] = [dataclasses.asdict(a) for a in masked.actions]
    return data


def _json_text(data: Mapping[str, Any]) -> str:
    """The JSON twin: the summary indented, each scenario on one line of its own.

    One line per scenario keeps the file readable with ``grep`` and ``jq`` and lets
    :func:`json.dumps` use its C encoder (an ``indent`` makes it fall back to Python: 2.7 s of
    a 500-scenario report went there). A NaN or infinity is written as null.
    """
    try:
        return _json_lines(data)
    except ValueError:  # allow_nan=False met one: take the slow walk that replaces them
        return _json_lines(_finite(data))


def _json_lines(data: Mapping[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        if key == "scenarios" and value:
            rows = ",\n".join(json.dumps(v, default=str, allow_nan=False) for v in value)
            text = f"[\n{rows}\n]"
        else:
            text = json.dumps(value, indent=1, default=str, allow_nan=False)
        parts.append(f"{json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _finite(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON parsers (JSON.parse, jq) refuse them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _anchor(nodeid: str, used: set[str]) -> str:
    base = "s-" + re.sub(r"[^A-Za-z0-9_-]+", "-", nodeid).strip("-")[:80]
    anchor, n = base, 1
    while anchor in used:
        n += 1
        anchor = f"{base}-{n}"
    used.add(anchor)
    return anchor


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-resilience")
    except PackageNotFoundError:
        return "unknown"
