"""The engine's durable memory: SQLite in WAL mode, one file.

Everything the engine decides is written here before it acts (alerts, incidents, every
action with start, end and result, verify results, escalations, the outbox, safety
state), so a restarted engine resumes open incidents and a post-incident review has the
whole trail. Free text passes through :func:`~.redaction.redact` on the way in.

Webhook alerts enter through the inbox: :meth:`Store.receive` writes every delivery of a
batch in one transaction before any of them is answered 200, and the decision on an alert
removes it from the inbox in the decision's own transaction, so after a SIGKILL each alert
answered 200 is either decided or still in the inbox (decided on restart), never both,
never neither. ``synchronous=NORMAL`` in WAL mode: a commit survives the process being
killed (SIGKILL included: the WAL is in the OS's page cache); a power loss may take the
last commits. No commit waits for an fsync: SQLite's automatic checkpoint (every 1000 WAL
pages, in whichever commit crosses the mark, with two fsyncs) is off, and a checkpointer
thread copies the WAL into the database file in the background (PASSIVE: it waits for no
reader and no writer), so a storm's commits stay sub-millisecond instead of one in ~20
taking tens of milliseconds, with the intake's 200s waiting behind it.

Size: over 500 lines because the schema and every query on it stay in one place on purpose:
one writer lock, one transaction discipline; the inbox and outbox tables could move out.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .alerts import Alert
from .redaction import LOGGER, redact, text_redactor

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
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY, fingerprint TEXT, name TEXT, target TEXT, status TEXT,
    severity TEXT, labels TEXT, annotations TEXT, value REAL, source TEXT,
    starts_at REAL, ends_at REAL, received_at REAL);
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


_ALERT_COLUMNS = (
    "fingerprint, name, target, status, severity, labels, annotations, value, source,"
    " starts_at, ends_at, received_at"
)


class Store:
    """Thread-safe: one connection behind a lock.

    Writes outside :meth:`transaction` commit one by one; the engine's hot paths (a
    dispatched batch of alerts, a webhook batch, a dry-run step) each take one transaction,
    which also looks the secrets up once for all its strings.
    """

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
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
        self._db.execute("PRAGMA journal_size_limit=16777216")  # a storm's WAL shrinks after
        self._db.executescript(_SCHEMA)
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None  # started by the first commit
        self._local = threading.local()  # the redactor of this thread's open transaction
        # in a transaction, rows of the append-only tables wait here and go in as one
        # multi-row INSERT per table (at commit, or before any read): each statement
        # executed releases and re-takes the GIL, which a storm pays per alert otherwise
        self._appends: dict[str, list[tuple[object, ...]]] = {}
        # safety state as stored (JSON text, None for absent): read on every decision,
        # written only through this connection; forgotten on a rollback
        self._state: dict[str, str | None] = {}
        # safety keys set in the open transaction: re-read from the file on a rollback
        self._dirty: set[str] = set()
        self._state_loaded = False  # the whole safety table is in _state
        self._parsed: dict[str, Any] = {}  # _state's values decoded, on first read
        # webhook alerts' encoded rows from the inbox write, reused by their decision
        self._encoded: dict[int, tuple[Alert, tuple[object, ...]]] = {}
        # SQLite allows one writer at a time: the engine's connection and the intake's take
        # this lock around their write transactions, so one waits on a lock that wakes it
        # when the other commits rather than in SQLite's busy handler, which sleeps 1..100 ms
        self._writer = threading.Lock()
        self._intake: sqlite3.Connection | None = None  # the intake thread's own connection
        self._inbox_next = 0  # next inbox id (under _writer): no id is handed out twice
        # when each action started, overall and per target, sorted: the safety caps count
        # them on every decision, from memory instead of a query over the action log. Built
        # from the log here; actions of the open transaction wait in _started_now until
        # its commit (a rollback drops them), counted meanwhile by the transaction itself
        self._started: list[float] = []
        self._started_on: dict[str, list[float]] = {}
        self._started_now: list[tuple[float, str]] = []
        for at, target in self._db.execute("SELECT started_at, target FROM actions"):
            if at is not None:
                self._count_started(at, target)
        # action ids handed out here (the row goes in with the transaction's other rows):
        # this connection is the only one that writes actions
        self._action_next: int = self._db.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM actions"
        ).fetchone()[0]
        # a transaction is open (under _lock); it holds _writer and has begun in SQLite
        # only from its first statement on, which is its commit unless it reads what it
        # wrote or needs a statement's answer (see _begin)
        self._in_tx = False
        self._writing = False
        # in a transaction, keyed UPDATE/DELETE/UPSERT statements wait here, in order, and
        # run at its commit after the appended rows (which they may refer to, never precede)
        self._later: list[tuple[str, tuple[object, ...]]] = []
        # incidents opened in the open transaction, not written yet: id -> their row's index
        # in _appends, so the transaction's updates of them go into that one INSERT
        self._new_incidents: dict[str, int] = {}

    def _start_checkpoints(self) -> None:
        """Start the checkpointer (see the module docstring), once, for a store written to."""
        if self._checkpointer is None and not self._closing.is_set():
            self._checkpointer = threading.Thread(
                target=self._checkpoints, name="engine-store-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoints(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            while not self._closing.wait(_CHECKPOINT_EVERY_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # retried next time; commits go on regardless
                    LOGGER.warning("store checkpoint failed: %s", exc)
        finally:
            db.close()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=10)
        with self._lock, self._writer:
            self._db.close()
            if self._intake is not None:
                self._intake.close()
                self._intake = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store (re-entrant) and commit once at the outermost level.

        Its writes wait in memory and go to SQLite at the commit, so SQLite's one write lock
        (which the intake's inbox writes, and so the webhook's 200s, wait for) is held for
        the statements only, not for the decisions computed in between. A read in the
        transaction first writes what it has (it sees its own writes), as does a statement
        whose answer is needed; from then on it holds the write lock until the commit.
        """
        with self._lock:
            if self._in_tx:
                yield
                return
            self._local.redact = text_redactor()  # the secrets looked up once, not per string
            self._in_tx = True
            try:
                yield
                self._begin()
                self._flush()
                self._db.execute("COMMIT")
            except BaseException:
                self._appends.clear()
                self._new_incidents.clear()
                self._later.clear()
                self._started_now.clear()
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._reread_state()
                raise
            finally:
                self._in_tx = False
                self._local.redact = None
                if self._writing:
                    self._writing = False
                    self._writer.release()
            started, self._started_now = self._started_now, []
            self._dirty.clear()
            for at, target in started:
                self._count_started(at, target)
            self._start_checkpoints()

    def _begin(self) -> None:
        """Take the write lock and BEGIN, once per transaction (call under ``_lock``)."""
        if self._writing:
            return
        self._writer.acquire()
        self._writing = True
        self._db.execute("BEGIN IMMEDIATE")  # a failure: the transaction's except releases

    def _write_later(self, sql: str, args: tuple[object, ...]) -> None:
        """Run a keyed write now, or in a transaction at its commit (see ``_later``)."""
        with self._lock:
            if self._in_tx:
                self._later.append((sql, args))
            else:
                self._db.execute(sql, args)

    def _count_started(self, at: float, target: str) -> None:
        """Count a committed action in the index the caps read (see action_counts)."""
        bisect.insort(self._started, at)
        bisect.insort(self._started_on.setdefault(target, []), at)

    def _append(self, table: str, columns: str, row: tuple[object, ...]) -> None:
        """INSERT ``row``; in a transaction, batched with the rows like it (see _flush)."""
        with self._lock:
            if self._in_tx:
                self._appends.setdefault(f"{table} ({columns})", []).append(row)
            else:
                marks = ",".join("?" * len(row))
                self._db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", row)

    def _flush(self) -> None:
        """Write the batched rows (one statement per table and up to 999 values), then the
        keyed writes in order; the transaction has begun (``_begin``)."""
        with self._lock:
            pending, self._appends = self._appends, {}
            self._new_incidents.clear()
            for into, rows in pending.items():
                _insert_rows(self._db, into, rows)
            later, self._later = self._later, []
            for sql, args in later:
                self._db.execute(sql, args)

    def _redact(self, text: str) -> str:
        redactor: Callable[[str], str] | None = getattr(self._local, "redact", None)
        return redactor(text) if redactor is not None else redact(text)

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            if self._appends or self._later:  # a read in a transaction sees its own writes
                self._begin()
                self._flush()
            return self._db.execute(sql, args).fetchall()

    def _now(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run a statement whose answer (rowcount) is needed now, in order with the rest."""
        with self._lock:
            if self._in_tx:
                self._begin()
                self._flush()
            return self._db.execute(sql, args)

    # -- alerts ------------------------------------------------------------------------

    def _alert_row(self, alert: Alert) -> tuple[object, ...]:
        return (
            alert.fingerprint,
            alert.name,
            alert.target,
            alert.status,
            alert.severity,
            json.dumps(dict(alert.labels)),
            self._redact(json.dumps(dict(alert.annotations))),
            alert.value,
            alert.source,
            alert.starts_at,
            alert.ends_at,
            alert.received_at,
        )

    def add_alert(self, alert: Alert, decision: str, incident_id: str | None = None) -> None:
        encoded = self._encoded.pop(id(alert), None)
        row = encoded[1] if encoded is not None and encoded[0] is alert else None
        self._append(
            "alerts",
            f"{_ALERT_COLUMNS}, decision, incident_id",
            (*(row or self._alert_row(alert)), decision, incident_id),
        )

    def receive(self, deliveries: Sequence[Sequence[Alert]]) -> list[list[int]]:
        """Write every alert of ``deliveries`` to the inbox in one transaction (group commit).

        Returns the inbox ids, delivery by delivery; once this returns, all of them survive
        a SIGKILL. :meth:`decided` removes an alert when its decision is recorded.

        Runs on the caller's thread over the intake's own connection, without the store's
        lock: a webhook body is never kept waiting by a read, a decision being computed or
        a slow platform listing, only by another write transaction committing.
        """
        if len(self._encoded) > 100_000:  # decisions that never came (engine stopped)
            self._encoded.clear()
        outer = getattr(self._local, "redact", None)
        self._local.redact = outer or text_redactor()
        try:  # encoded before the write lock is taken: the lock is held for SQLite only
            rows = [[self._alert_row(alert) for alert in delivery] for delivery in deliveries]
        finally:
            self._local.redact = outer
        with self._writer:
            db = self._intake_connection()
            first = self._inbox_next
            db.execute("BEGIN IMMEDIATE")
            try:
                ids: list[list[int]] = []
                flat: list[tuple[object, ...]] = []
                next_id = first
                for delivery, encoded in zip(deliveries, rows, strict=True):
                    ids.append(list(range(next_id, next_id + len(delivery))))
                    next_id += len(delivery)
                    flat.extend((i, *row) for i, row in zip(ids[-1], encoded, strict=True))
                if flat:
                    _insert_rows(db, f"inbox (id, {_ALERT_COLUMNS})", flat)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._inbox_next = next_id
        self._start_checkpoints()
        for delivery, encoded in zip(deliveries, rows, strict=True):
            for alert, row in zip(delivery, encoded, strict=True):
                self._encoded[id(alert)] = (alert, row)
        return ids

    def _intake_connection(self) -> sqlite3.Connection:
        """The intake's connection (opened on first use; call under ``_writer``)."""
        if self._intake is None:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
            db.execute("PRAGMA synchronous=NORMAL")  # WAL is the file's, set by _db
            db.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer's job
            last = db.execute("SELECT COALESCE(MAX(id), 0) FROM inbox").fetchone()[0]
            self._inbox_next = max(self._inbox_next, last + 1)
            self._intake = db
        return self._intake

    def decided(self, inbox_ids: Sequence[int]) -> None:
        """These inbox alerts have their decision recorded (call in the same transaction)."""
        for i in range(0, len(inbox_ids), 999):
            part = tuple(inbox_ids[i : i + 999])
            marks = ",".join("?" * len(part))
            self._write_later(f"DELETE FROM inbox WHERE id IN ({marks})", part)

    def inbox(self) -> list[tuple[int, Alert]]:
        """Alerts taken but not decided yet (the engine stopped first), oldest first."""
        rows = self._rows(f"SELECT id, {_ALERT_COLUMNS} FROM inbox ORDER BY id")
        return [
            (
                r["id"],
                Alert(
                    name=r["name"],
                    target=r["target"],
                    labels=json.loads(r["labels"]),
                    annotations=json.loads(r["annotations"]),
                    severity=r["severity"],
                    status=r["status"],
                    starts_at=r["starts_at"],
                    ends_at=r["ends_at"],
                    fingerprint=r["fingerprint"],
                    value=r["value"],
                    source=r["source"],
                    received_at=r["received_at"],
                ),
            )
            for r in rows
        ]

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
        with self._lock:
            if self._in_tx:  # its updates in this transaction change this row (update_incident)
                self._new_incidents[incident.id] = len(self._appends.get(_INCIDENTS_INTO, ()))
            self._open_incident_row(incident)

    def _open_incident_row(self, incident: Incident) -> None:
        self._append(
            "incidents",
            _INCIDENT_COLUMNS,
            (
                incident.id,
                incident.alert_name,
                incident.target,
                incident.fingerprint,
                incident.playbook,
                incident.status,
                incident.step,
                incident.severity,
                self._redact(incident.summary),
                self._redact(incident.reason),
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
                fields[key] = self._redact(fields[key])
        with self._lock:
            at = self._new_incidents.get(incident_id)
            if at is not None:  # opened in this transaction, not written yet: one INSERT
                rows = self._appends[_INCIDENTS_INTO]
                row = list(rows[at])
                for key, value in fields.items():
                    row[_INCIDENT_INDEX[key]] = value
                rows[at] = tuple(row)
                return
        cols = ", ".join(f"{k}=?" for k in fields)
        self._write_later(
            f"UPDATE incidents SET {cols} WHERE id=?", (*fields.values(), incident_id)
        )

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
        with self._lock:
            action_id = self._action_next
            self._action_next += 1
            self._append(
                "actions",
                "id, incident_id, target, step, strategy, action, params, started_at, ended_at,"
                " result, detail",
                (
                    action_id,
                    incident_id,
                    target,
                    step,
                    strategy,
                    action,
                    self._redact(json.dumps(dict(params), default=str)),
                    now,
                    now if result != "running" else None,
                    result,
                    self._redact(detail),
                ),
            )
            if self._in_tx:
                self._started_now.append((now, target))
            else:
                self._count_started(now, target)
        return action_id

    def action_finished(self, action_id: int, result: str, detail: str) -> None:
        self._write_later(
            "UPDATE actions SET ended_at=?, result=?, detail=? WHERE id=?",
            (time.time(), result, self._redact(detail), action_id),
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

    def action_counts(self, since: float, target: str) -> tuple[int, int]:
        """Actions started since ``since``: in all, and on ``target``.

        Counted in memory (the index built from the action log when the store opened, kept
        with every action since), including the open transaction's own: the same answer
        as a COUNT over the table, without a query per decision.
        """
        with self._lock:
            on = self._started_on.get(target, ())
            total = len(self._started) - bisect.bisect_left(self._started, since)
            on_target = len(on) - bisect.bisect_left(on, since)
            for at, where in self._started_now:
                if at >= since:
                    total += 1
                    on_target += where == target
            return total, on_target

    def count_actions(self, since: float, *, target: str | None = None) -> int:
        if target is not None:
            return self.action_counts(since, target)[1]
        return self.action_counts(since, "")[0]

    def interrupt_running_actions(self) -> int:
        cur = self._now(
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
        self._append(
            "verifications",
            "incident_id, step, condition, outcome, detail, started_at, ended_at",
            (incident_id, step, condition, outcome, self._redact(detail), started_at, time.time()),
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
        self._append(
            "notes",
            "incident_id, at, kind, message",
            (incident_id, time.time(), kind, self._redact(message)),
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
        cur = self._now(
            "INSERT OR IGNORE INTO outbox (channel, dedup_key, event_action, payload, status,"
            " attempts, next_attempt_at, last_error, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                channel,
                dedup_key,
                event_action,
                self._redact(json.dumps(payload)),
                "pending",
                0,
                now,
                "",
                now,
            ),
        )
        return cur.rowcount == 1

    def queued(self, channel: str, dedup_key: str, event_action: str) -> bool:
        """Was that (channel, key, action) ever queued? One look-up in the unique index."""
        rows = self._rows(
            "SELECT 1 FROM outbox WHERE channel=? AND dedup_key=? AND event_action=?",
            (channel, dedup_key, event_action),
        )
        return bool(rows)

    def outbox(
        self, *, status: str | None = None, due_before: float | None = None
    ) -> list[OutboxItem]:
        sql = "SELECT * FROM outbox WHERE 1=1"
        args: list[str | float] = []
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
        self._write_later(
            "UPDATE outbox SET status=?, attempts=attempts+1, last_error=?, next_attempt_at=?,"
            " delivered_at=? WHERE id=?",
            (
                status,
                self._redact(error),
                next_attempt_at if next_attempt_at is not None else now,
                now if status == "delivered" else None,
                item_id,
            ),
        )

    def next_outbox_due(self) -> float | None:
        rows = self._rows("SELECT MIN(next_attempt_at) FROM outbox WHERE status='pending'")
        return cast("float | None", rows[0][0])  # MIN of a REAL column; NULL: none pending

    # -- safety state ------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        with self._lock:
            if not self._state_loaded:  # the whole table once: no query per new key
                # not through _rows: nothing a transaction holds can be in this table yet
                # (set_state loads it first), so nothing needs writing before this read
                rows = self._db.execute("SELECT key, value FROM safety").fetchall()
                self._state = {r[0]: r[1] for r in rows}
                self._parsed = {}
                self._state_loaded = True
            text = self._state.get(key)
            if text is None:
                return default
            value = self._parsed.get(key, _UNPARSED)
            if value is _UNPARSED:
                value = self._parsed[key] = json.loads(text)
        # scalars (cooldown deadlines) are immutable: shared; the rest a fresh copy each time
        return value if isinstance(value, int | float | str) else json.loads(text)

    def set_state(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        with self._lock:
            self.get_state(key)  # loaded: a later read must not overwrite this from the file
            self._write_later(
                "INSERT INTO safety (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, text),
            )
            self._state[key] = text
            self._parsed.pop(key, None)
            if self._in_tx:
                self._dirty.add(key)

    def _reread_state(self) -> None:
        """After a rollback: the keys the transaction set hold their stored values again."""
        for key in self._dirty:
            rows = self._db.execute("SELECT value FROM safety WHERE key=?", (key,)).fetchall()
            if rows:
                self._state[key] = rows[0][0]
            else:
                self._state.pop(key, None)
            self._parsed.pop(key, None)
        self._dirty.clear()


_UNPARSED = object()
_INCIDENT_COLUMNS = (
    "id, alert_name, target, fingerprint, playbook, status, step, severity, summary, reason,"
    " alert, follow_up, dry_run, opened_at, detected_at, updated_at, closed_at"
)
_INCIDENTS_INTO = f"incidents ({_INCIDENT_COLUMNS})"  # its key in Store._appends
_INCIDENT_INDEX = {name.strip(): i for i, name in enumerate(_INCIDENT_COLUMNS.split(","))}
#: how often the checkpointer copies the WAL into the database file; between two, a storm
#: grows the WAL by a few MB at most
_CHECKPOINT_EVERY_S = 0.5


def _insert_rows(db: sqlite3.Connection, into: str, rows: list[tuple[object, ...]]) -> None:
    """INSERT ``rows`` into ``into`` ("table (columns)"): few statements, <= 999 values each.

    Each statement executed hands the GIL over and back, which a storm pays per alert
    when rows go in one by one.
    """
    width = len(rows[0])
    per = max(1, 999 // width)  # SQLite's historical bound on variables
    group = "(" + ",".join("?" * width) + ")"
    for i in range(0, len(rows), per):
        part = rows[i : i + per]
        db.execute(
            f"INSERT INTO {into} VALUES {','.join([group] * len(part))}",
            [value for row in part for value in row],
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
