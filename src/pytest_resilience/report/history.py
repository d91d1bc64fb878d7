"""Earlier runs' summaries, kept as one JSON file per run, and the trend against them.

A directory of timestamped files rather than one growing file: concurrent CI jobs writing
to a shared cache never clobber each other, old runs are pruned with ``rm``, and a file
that is cut short by a killed job spoils only itself (it is skipped with a warning).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["TREND_METRICS", "TrendDelta", "compare_runs", "load_runs", "save_run"]

log = logging.getLogger("pytest_resilience.report")

PREFIX = "resilience-"
DEFAULT_LIMIT = 10

#: (key, label, +1 when higher is better / -1 when lower is better)
TREND_METRICS: tuple[tuple[str, str, int], ...] = (
    ("score", "resilience score", +1),
    ("failed", "scenarios failed", -1),
    ("mean_time_to_detect_s", "mean time to respond (detect)", -1),
    ("mean_time_to_recover_s", "mean time to resolve (recover)", -1),
    ("auto_remediation_rate", "auto-remediation rate", +1),
    ("pages_sent", "pages sent", -1),
    ("downtime_s", "customer-facing downtime (s)", -1),
)


@dataclass(frozen=True)
class TrendDelta:
    metric: str
    label: str
    current: float | None
    previous: float | None
    delta: float | None
    #: "better", "worse", "same", or "n/a" when either run lacks the figure
    verdict: str


def save_run(history_dir: Path, summary: Mapping[str, Any], *, now: datetime | None = None) -> Path:
    """Write this run's summary as ``resilience-<UTC timestamp>.json``; returns its path."""
    history_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    path = history_dir / f"{PREFIX}{stamp}.json"
    _write_atomic(path, json.dumps(summary, indent=1, sort_keys=True, default=str))
    return path


def load_runs(history_dir: Path | None, *, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """The last ``limit`` runs' summaries, oldest first; unreadable files are skipped."""
    if history_dir is None or not history_dir.is_dir():
        return []
    runs: list[dict[str, Any]] = []
    for path in sorted(history_dir.glob(f"{PREFIX}*.json"))[-limit:] if limit > 0 else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable resilience history file %s: %s", path, exc)
            continue
        if not isinstance(data, dict):
            log.warning("skipping resilience history file %s: not a JSON object", path)
            continue
        data.setdefault("history_file", path.name)
        runs.append(data)
    return runs


def metric(run: Mapping[str, Any], key: str) -> float | None:
    """A figure of a run summary, wherever it lives (summary counts, score, metrics)."""
    for section in ("metrics", "summary"):
        value = (run.get(section) or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    score = run.get("score")
    if key == "score" and isinstance(score, Mapping):
        value = score.get("value")
        return float(value) if isinstance(value, int | float) else None
    return None


def compare_runs(
    current: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> list[TrendDelta]:
    """Each trend metric now vs the previous run, with whether that is better or worse."""
    deltas = []
    for key, label, direction in TREND_METRICS:
        now = metric(current, key)
        before = metric(previous, key) if previous is not None else None
        if now is None or before is None:
            deltas.append(TrendDelta(key, label, now, before, None, "n/a"))
            continue
        delta = round(now - before, 4)
        verdict = "same" if abs(delta) < 1e-9 else ("better" if delta * direction > 0 else "worse")
        deltas.append(TrendDelta(key, label, now, before, delta, verdict))
    return deltas


def run_label(run: Mapping[str, Any]) -> str:
    stamp = str(run.get("generated_at", ""))
    try:
        return datetime.fromisoformat(stamp).strftime("%m-%d %H:%M")
    except ValueError:
        return stamp[:16] or "?"


def series(runs: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [metric(run, key) for run in runs]


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reviewers to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
