"""The incidents a store holds, filtered and formatted for people (table) and tools (JSON).

Backs ``python -m pytest_resilience.engine incidents``: the ids it prints are what
``postmortem INCIDENT_ID`` takes, so nobody has to read the SQLite file to find one.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigError
from .store import Incident, Store

__all__ = ["incidents_json", "incidents_table", "list_incidents", "parse_since"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_REASON_WIDTH = 60


def parse_since(text: str, *, now: float | None = None) -> float:
    """``30m``/``2h``/``7d`` ago, or an ISO 8601 time (a date alone is its midnight, UTC)."""
    now = time.time() if now is None else now
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give a duration (90s, 30m, 2h, 7d) or an ISO 8601 time "
            "(2026-12-01T08:00:00Z, 2026-12-01)",
            field="--since",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def list_incidents(
    store: Store, *, open_only: bool = False, since: float | None = None
) -> list[Incident]:
    """Oldest first. ``open_only``: not closed yet (being remediated, or paged and firing)."""
    return [
        i
        for i in store.incidents()
        if (not open_only or i.closed_at is None) and (since is None or i.opened_at >= since)
    ]


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _row(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id,
        "opened_at": _iso(incident.opened_at),
        "status": incident.status,
        "alert": incident.alert_name,
        "target": incident.target,
        "severity": incident.severity,
        "playbook": incident.playbook,
        "reason": incident.reason,
        "summary": incident.summary,
        "detected_at": _iso(incident.detected_at),
        "closed_at": _iso(incident.closed_at),
        "dry_run": incident.dry_run,
        "source": incident.alert.source,
    }


def incidents_json(incidents: Sequence[Incident]) -> str:
    return json.dumps([_row(i) for i in incidents], indent=2)


def incidents_table(incidents: Sequence[Incident]) -> str:
    """Aligned columns; the reason is cut to keep a line readable (JSON has it whole)."""
    columns = ("id", "opened_at", "status", "alert", "target", "severity", "playbook", "reason")
    rows = []
    for incident in incidents:
        row = _row(incident)
        reason = row["reason"] or ""
        if len(reason) > _REASON_WIDTH:
            reason = reason[: _REASON_WIDTH - 1] + "…"
        row["reason"] = reason.replace("\n", " ")
        row["playbook"] = row["playbook"] or "-"
        rows.append([str(row[c] if row[c] is not None else "-") for c in columns])
    header = ["ID", "OPENED (UTC)", "STATUS", "ALERT", "TARGET", "SEVERITY", "PLAYBOOK", "REASON"]
    widths = [max([len(h), *(len(r[n]) for r in rows)]) for n, h in enumerate(header)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *rows]]  # fmt: skip
    return "\n".join(lines)
