"""Post-incident review: one incident's whole trail as Markdown and JSON.

Built from the store only (alerts, actions, verify results, notes, pages), so it can be
exported from a running engine, after a crash, or by ``python -m pytest_resilience.engine
postmortem``. Every text went through redaction on its way into the store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .redaction import redact
from .store import ActionRecord, Incident, Store, VerifyRecord, alert_to_json

__all__ = ["Postmortem", "build_postmortem"]


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    kind: str
    text: str


@dataclass(frozen=True)
class Postmortem:
    incident: Incident
    timeline: tuple[TimelineEntry, ...]
    actions: tuple[ActionRecord, ...]
    verifications: tuple[VerifyRecord, ...]
    pages: tuple[dict[str, Any], ...]
    follow_up: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        incident = asdict(self.incident)
        incident["alert"] = json.loads(alert_to_json(self.incident.alert))
        return {
            "incident": incident,
            "timeline": [asdict(e) for e in self.timeline],
            "actions": [asdict(a) for a in self.actions],
            "verifications": [asdict(v) for v in self.verifications],
            "pages": list(self.pages),
            "follow_up": list(self.follow_up),
        }

    def to_json(self) -> str:
        return redact(json.dumps(self.to_dict(), indent=2, default=str))

    def to_markdown(self) -> str:
        i = self.incident
        lines = [
            f"# Incident {i.id}: {i.alert_name} on {i.target}",
            "",
            f"- Status: **{i.status}**" + (f" ({i.reason})" if i.reason else ""),
            f"- Playbook: {i.playbook or '(none)'}; severity {i.severity}"
            + ("; dry run" if i.dry_run else ""),
            f"- Detected: {_ts(i.detected_at)}; opened {_ts(i.opened_at)}"
            + (f"; closed {_ts(i.closed_at)}" if i.closed_at else ""),
            f"- Summary: {i.summary}",
            "",
            "## Timeline",
            "",
            "| time (UTC) | event | detail |",
            "|---|---|---|",
            *(f"| {_ts(e.at)} | {e.kind} | {_cell(e.text)} |" for e in self.timeline),
            "",
            "## Actions",
            "",
            "| step | action | params | started | ended | result | detail |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {a.step + 1} | {a.action} | {_cell(json.dumps(a.params))} | {_ts(a.started_at)}"
                f" | {_ts(a.ended_at)} | {a.result} | {_cell(a.detail)} |"
                for a in self.actions
            ),
            "",
            "## Verification",
            "",
            "| step | condition | outcome | detail |",
            "|---|---|---|---|",
            *(
                f"| {v.step + 1} | {_cell(v.condition)} | {v.outcome} | {_cell(v.detail)} |"
                for v in self.verifications
            ),
            "",
            "## Pages",
            "",
            *(
                f"- {p['channel']} {p['event_action']}: {p['status']} after {p['attempts']}"
                f" attempt(s)" + (f", last error {p['last_error']}" if p["last_error"] else "")
                for p in self.pages
            ),
            *([] if self.pages else ["- none"]),
            "",
            "## Follow-up items",
            "",
            *(f"- [ ] {item}" for item in self.follow_up),
            *([] if self.follow_up else ["- none recorded"]),
            "",
        ]
        return redact("\n".join(lines))

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        md = directory / f"{self.incident.id}.md"
        js = directory / f"{self.incident.id}.json"
        md.write_text(self.to_markdown())
        js.write_text(self.to_json())
        return md, js


def build_postmortem(store: Store, incident_id: str) -> Postmortem:
    incident = store.incident(incident_id)
    if incident is None:
        raise KeyError(f"no incident {incident_id!r} in {store.path}")
    actions = tuple(store.actions(incident_id))
    verifications = tuple(store.verifications(incident_id))
    entries = [TimelineEntry(n.at, n.kind, n.message) for n in store.notes(incident_id)]
    entries += [
        TimelineEntry(at, f"alert {status}", decision)
        for at, status, decision in store.alerts_of(incident_id)
    ]
    for a in actions:
        entries.append(TimelineEntry(a.started_at, "action started", a.action))
        if a.ended_at is not None:
            entries.append(
                TimelineEntry(a.ended_at, f"action {a.result}", f"{a.action}: {a.detail}")
            )
    entries += [
        TimelineEntry(v.ended_at, f"verify {v.outcome}", f"{v.condition}: {v.detail}")
        for v in verifications
    ]
    pages: tuple[dict[str, Any], ...] = tuple(
        {
            "channel": p.channel,
            "event_action": p.event_action,
            "status": p.status,
            "attempts": p.attempts,
            "last_error": p.last_error,
            "created_at": p.created_at,
            "delivered_at": p.delivered_at,
        }
        for p in store.outbox()
        if p.dedup_key == incident_id
    )
    for p in pages:
        if p["delivered_at"]:
            entries.append(
                TimelineEntry(p["delivered_at"], "paged", f"{p['channel']} {p['event_action']}")
            )
    return Postmortem(
        incident=incident,
        timeline=tuple(sorted(entries, key=lambda e: e.at)),
        actions=actions,
        verifications=verifications,
        pages=pages,
        follow_up=incident.follow_up,
    )


def _ts(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
