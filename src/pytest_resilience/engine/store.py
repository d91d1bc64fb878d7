"""The engine's durable memory: SQLite in WAL mode, one file.

Everything the engine decides is written here before it acts (alerts, incidents, every
action with start, end and result, verify results, escalations, the outbox, safety
state), so a restarted engine resumes open incidents and a post-incident review has the
whole trail. Free text passes through :func:`~.redaction.redact` on the way in.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .alerts import Alert
from .redaction import redact

__all__ = ["ActionRecord", "Incident", "IncidentNote", "OutboxItem", "Store", "VerifyRecord"]

OPEN = "open"
RESOLVED = "resolved"
ESCALATED = "escalated"
WARNED = "warned"
DRY_RUN = "dry_run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, fingerprint TEXT, name TEXT, target TEXT, status TEXT,
    severity TEXT, labels TEXT, annotations TEXT, value REAL, source TEXT,
    starts_at REAL, ends_at REAL, received_at REAL, decision TEXT, incident_id TEXT);
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts(incident_id);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, alert_name TEXT, target TEXT, fingerprint TEXT, playbook TEXT,
    status TEXT, step INTEGER, severity TEXT, summary TEXT, reason TEXT,
    alert TEXT, follow_up TEXT, dry_run INTEGER, opened_at REAL, detected_at REAL,
    updated_at REAL, closed_at REAL);
CREATE INDEX IF NOT EXISTS incidents_status ON incidents(status);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY, incident_id TEXT, target TEXT, step INTEGER, strategy TEXT,
    action TEXT, params TEXT, started_at REAL, ended_at REAL, result TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS actions_started ON actions(started_at);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY, incident_id TEXT, step INTEGER, condition TEXT, outcome TEXT,
    detail TEXT, started_at REAL, ended_at REAL);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY, incident_id TEXT, at REAL, kind TEXT, message TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, channel TEXT, dedup_key TEXT, event_action TEXT, payload TEXT,
    status TEXT, attempts INTEGER, next_attempt_at REAL, last_error TEXT,
    created_at REAL, delivered_at REAL, UNIQUE(channel, dedup_key, event_action));
CREATE TABLE IF NOT EXISTS safety (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class Incident:
    id: str
    alert_name: str
    target: str
    fingerprint: str
    playbook: str
    status: str
    step: int
    severity: str
    summary: str
    reason: str
    alert: Alert
    follow_up: tuple[str, ...]
    dry_run: bool
    opened_at: float
    detected_at: float
    updated_at: float
    closed_at: float | None

    @property
    def open(self) -> bool:
        return self.status == OPEN


@dataclass(frozen=True)
class ActionRecord:
    id: int
    incident_id: str
    target: str
    step: int
    strategy: str
    action: str
    params: dict[str, Any]
    started_at: float
    ended_at: float | None
    result: str  # running | ok | failed | dry_run | interrupted
    detail: str


@dataclass(frozen=True)
class VerifyRecord:
    incident_id: str
    step: int
    condition: str
    outcome: str
    detail: str
    started_at: float
    ended_at: float


@dataclass(frozen=True)
class IncidentNote:
    incident_id: str
    at: float
    kind: str
    message: str


@dataclass(frozen=True)
class OutboxItem:
    id: int
    channel: str
    dedup_key: str
    event_action: str
    payload: dict[str, Any]
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: float
    last_error: str
    created_at: float
    delivered_at: float | None


def alert_to_json(alert: Alert) -> str:
    return json.dumps(
        {
            "name": alert.name,
            "target": alert.target,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "severity": alert.severity,
            "status": alert.status,
            "starts_at": alert.starts_at,
            "ends_at": alert.ends_at,
            "fingerprint": alert.fingerprint,
            "value": alert.value,
            "source": alert.source,
            "received_at": alert.received_at,
        }
    )


def alert_from_json(text: str) -> Alert:
    return Alert(**json.loads(text))


class Store:
    """Thread-safe: one connection behind a lock (the engine's writes are small and few)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process kill
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the store (re-entrant) and commit once at the outermost level."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).lastrowid or 0

    # -- alerts ------------------------------------------------------------------------

    def add_alert(self, alert: Alert, decision: str, incident_id: str | None = None) -> None:
        self._exec(
            "INSERT INTO alerts (fingerprint, name, target, status, severity, labels,"
            " annotations, value, source, starts_at, ends_at, received_at, decision,"
            " incident_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                alert.fingerprint,
                alert.name,
                alert.target,
                alert.status,
                alert.severity,
                json.dumps(dict(alert.labels)),
                redact(json.dumps(dict(alert.annotations))),
                alert.value,
                alert.source,
                alert.starts_at,
                alert.ends_at,
                alert.received_at,
                decision,
                incident_id,
            ),
        )

    def alert_decisions(self) -> dict[str, int]:
        rows = self._rows("SELECT decision, COUNT(*) AS n FROM alerts GROUP BY decision")
        return {r["decision"]: r["n"] for r in rows}

    def alerts_of(self, incident_id: str) -> list[tuple[float, str, str]]:
        rows = self._rows(
            "SELECT received_at, status, decision FROM alerts WHERE incident_id=? ORDER BY id",
            (incident_id,),
        )
        return [(r["received_at"], r["status"], r["decision"]) for r in rows]

    # -- incidents ---------------------------------------------------------------------

    def open_incident(self, incident: Incident) -> None:
        self._exec(
            "INSERT INTO incidents (id, alert_name, target, fingerprint, playbook, status, step,"
            " severity, summary, reason, alert, follow_up, dry_run, opened_at, detected_at,"
            " updated_at, closed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                incident.id,
                incident.alert_name,
                incident.target,
                incident.fingerprint,
                incident.playbook,
                incident.status,
                incident.step,
                incident.severity,
                redact(incident.summary),
                redact(incident.reason),
                alert_to_json(incident.alert),
                json.dumps(list(incident.follow_up)),
                int(incident.dry_run),
                incident.opened_at,
                incident.detected_at,
                incident.updated_at,
                incident.closed_at,
            ),
        )

    def update_incident(self, incident_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        for key in ("summary", "reason"):
            if key in fields:
                fields[key] = redact(fields[key])
        cols = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE incidents SET {cols} WHERE id=?", (*fields.values(), incident_id))

    def incident(self, incident_id: str) -> Incident | None:
        rows = self._rows("SELECT * FROM incidents WHERE id=?", (incident_id,))
        return _incident(rows[0]) if rows else None

    def incidents(self, *, status: str | None = None) -> list[Incident]:
        if status is None:
            rows = self._rows("SELECT * FROM incidents ORDER BY opened_at, id")
        else:
            rows = self._rows(
                "SELECT * FROM incidents WHERE status=? ORDER BY opened_at, id", (status,)
            )
        return [_incident(r) for r in rows]

    # -- actions and verifications ----------------------------------------------------

    def action_started(
        self,
        incident_id: str,
        target: str,
        step: int,
        strategy: str,
        action: str,
        params: Mapping[str, Any],
        *,
        result: str = "running",
        at: float | None = None,
        detail: str = "",
    ) -> int:
        now = time.time() if at is None else at
        return self._exec(
            "INSERT INTO actions (incident_id, target, step, strategy, action, params,"
            " started_at, ended_at, result, detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                incident_id,
                target,
                step,
                strategy,
                action,
                redact(json.dumps(dict(params), default=str)),
                now,
                now if result != "running" else None,
                result,
                redact(detail),
            ),
        )

    def action_finished(self, action_id: int, result: str, detail: str) -> None:
        self._exec(
            "UPDATE actions SET ended_at=?, result=?, detail=? WHERE id=?",
            (time.time(), result, redact(detail), action_id),
        )

    def actions(self, incident_id: str | None = None) -> list[ActionRecord]:
        if incident_id is None:
            rows = self._rows("SELECT * FROM actions ORDER BY id")
        else:
            rows = self._rows(
                "SELECT * FROM actions WHERE incident_id=? ORDER BY id", (incident_id,)
            )
        return [
            ActionRecord(
                id=r["id"],
                incident_id=r["incident_id"],
                target=r["target"],
                step=r["step"],
                strategy=r["strategy"],
                action=r["action"],
                params=json.loads(r["params"]),
                started_at=r["started_at"],
                ended_at=r["ended_at"],
                result=r["result"],
                detail=r["detail"],
            )
            for r in rows
        ]

    def count_actions(self, since: float, *, target: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM actions WHERE started_at>=?"
        args: tuple = (since,)
        if target is not None:
            sql, args = sql + " AND target=?", (since, target)
        return int(self._rows(sql, args)[0][0])

    def interrupt_running_actions(self) -> int:
        with self._lock:
            cur = self._db.execute(
                "UPDATE actions SET result='interrupted', ended_at=?,"
                " detail='engine stopped while the action ran' WHERE result='running'",
                (time.time(),),
            )
            return cur.rowcount

    def add_verification(
        self,
        incident_id: str,
        step: int,
        condition: str,
        outcome: str,
        detail: str,
        started_at: float,
    ) -> None:
        self._exec(
            "INSERT INTO verifications (incident_id, step, condition, outcome, detail,"
            " started_at, ended_at) VALUES (?,?,?,?,?,?,?)",
            (incident_id, step, condition, outcome, redact(detail), started_at, time.time()),
        )

    def verifications(self, incident_id: str) -> list[VerifyRecord]:
        rows = self._rows(
            "SELECT * FROM verifications WHERE incident_id=? ORDER BY id", (incident_id,)
        )
        return [
            VerifyRecord(
                r["incident_id"],
                r["step"],
                r["condition"],
                r["outcome"],
                r["detail"],
                r["started_at"],
                r["ended_at"],
            )
            for r in rows
        ]

    def note(self, incident_id: str, kind: str, message: str) -> None:
        self._exec(
            "INSERT INTO notes (incident_id, at, kind, message) VALUES (?,?,?,?)",
            (incident_id, time.time(), kind, redact(message)),
        )

    def notes(self, incident_id: str) -> list[IncidentNote]:
        rows = self._rows("SELECT * FROM notes WHERE incident_id=? ORDER BY id", (incident_id,))
        return [IncidentNote(r["incident_id"], r["at"], r["kind"], r["message"]) for r in rows]

    # -- outbox ------------------------------------------------------------------------

    def enqueue(
        self, channel: str, dedup_key: str, event_action: str, payload: Mapping[str, Any]
    ) -> bool:
        """Queue one delivery; False if that (channel, key, action) was already queued."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO outbox (channel, dedup_key, event_action, payload, status,"
                " attempts, next_attempt_at, last_error, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    channel,
                    dedup_key,
                    event_action,
                    redact(json.dumps(payload)),
                    "pending",
                    0,
                    now,
                    "",
                    now,
                ),
            )
            return cur.rowcount == 1

    def outbox(
        self, *, status: str | None = None, due_before: float | None = None
    ) -> list[OutboxItem]:
        sql, args = "SELECT * FROM outbox WHERE 1=1", []
        if status is not None:
            sql += " AND status=?"
            args.append(status)
        if due_before is not None:
            sql += " AND next_attempt_at<=?"
            args.append(due_before)
        rows = self._rows(sql + " ORDER BY id", tuple(args))
        return [
            OutboxItem(
                id=r["id"],
                channel=r["channel"],
                dedup_key=r["dedup_key"],
                event_action=r["event_action"],
                payload=json.loads(r["payload"]),
                status=r["status"],
                attempts=r["attempts"],
                next_attempt_at=r["next_attempt_at"],
                last_error=r["last_error"],
                created_at=r["created_at"],
                delivered_at=r["delivered_at"],
            )
            for r in rows
        ]

    def outbox_result(
        self, item_id: int, *, status: str, error: str = "", next_attempt_at: float | None = None
    ) -> None:
        now = time.time()
        self._exec(
            "UPDATE outbox SET status=?, attempts=attempts+1, last_error=?, next_attempt_at=?,"
            " delivered_at=? WHERE id=?",
            (
                status,
                redact(error),
                next_attempt_at if next_attempt_at is not None else now,
                now if status == "delivered" else None,
                item_id,
            ),
        )

    def next_outbox_due(self) -> float | None:
        rows = self._rows("SELECT MIN(next_attempt_at) FROM outbox WHERE status='pending'")
        return rows[0][0]

    # -- safety state ------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM safety WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set_state(self, key: str, value: Any) -> None:
        self._exec(
            "INSERT INTO safety (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )


def _incident(r: sqlite3.Row) -> Incident:
    return Incident(
        id=r["id"],
        alert_name=r["alert_name"],
        target=r["target"],
        fingerprint=r["fingerprint"],
        playbook=r["playbook"],
        status=r["status"],
        step=r["step"],
        severity=r["severity"],
        summary=r["summary"],
        reason=r["reason"],
        alert=alert_from_json(r["alert"]),
        follow_up=tuple(json.loads(r["follow_up"])),
        dry_run=bool(r["dry_run"]),
        opened_at=r["opened_at"],
        detected_at=r["detected_at"],
        updated_at=r["updated_at"],
        closed_at=r["closed_at"],
    )
