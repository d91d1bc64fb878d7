"""A durable write-ahead record of injected faults.

A fault writes its entry *before* it acts and closes it only *after* its revert is
confirmed, so whatever kills the run (SIGKILL, OOM, a lost CI runner) the next session,
or ``pytest --chaos-cleanup``, knows exactly what is still broken and how to undo it.
SQLite with ``synchronous=FULL`` gives us the fsync on commit and safe concurrent
writers (several pytest-xdist workers may share one ledger).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Ledger", "LedgerEntry"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    description TEXT NOT NULL,
    spec TEXT NOT NULL,
    session TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    opened_at REAL NOT NULL,
    closed_at REAL,
    outcome TEXT
)
"""


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    kind: str
    target: str
    description: str
    spec: dict[str, Any]
    session: str
    host: str
    pid: int
    opened_at: float
    closed_at: float | None
    outcome: str | None

    @property
    def owner_alive(self) -> bool:
        """Whether the process that opened this entry still runs (on this host)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class Ledger:
    def __init__(self, path: Path, *, session: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.session = session or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)

    def open(self, kind: str, *, target: str, description: str, spec: dict[str, Any]) -> int:
        """Record a fault about to act; returns the entry id to close after revert."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO entries (kind, target, description, spec, session, host, pid,"
                " opened_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    target,
                    description,
                    json.dumps(spec, sort_keys=True),
                    self.session,
                    socket.gethostname(),
                    os.getpid(),
                    time.time(),
                ),
            )
            row_id = cursor.lastrowid
            if row_id is None:  # sqlite3 sets it on every INSERT; typeshed allows None
                raise RuntimeError(f"the ledger {self.path} gave no id for the new entry")
            return row_id

    def update_spec(self, entry_id: int, spec: dict[str, Any]) -> None:
        """Add what the fault learnt while acting (e.g. the rule handle) for a later revert."""
        with self._lock:
            self._db.execute(
                "UPDATE entries SET spec = ? WHERE id = ?",
                (json.dumps(spec, sort_keys=True), entry_id),
            )

    def close(self, entry_id: int, *, outcome: str = "reverted") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE entries SET closed_at = ?, outcome = ? WHERE id = ? AND closed_at IS NULL",
                (time.time(), outcome, entry_id),
            )

    def discard(self, entry_id: int) -> None:
        """Drop an entry whose fault never acted (a failed precondition): there is nothing
        to revert, and an open entry would make every later session try."""
        with self._lock:
            self._db.execute("DELETE FROM entries WHERE id = ? AND closed_at IS NULL", (entry_id,))

    def open_entries(self, *, include_live_owners: bool = False) -> list[LedgerEntry]:
        """Entries not yet closed; by default only those whose owning process is gone."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, target, description, spec, session, host, pid, opened_at,"
                " closed_at, outcome FROM entries WHERE closed_at IS NULL ORDER BY id DESC"
            ).fetchall()
        entries = [_entry(row) for row in rows]
        if include_live_owners:
            return entries
        return [e for e in entries if e.session != self.session and not e.owner_alive]

    def get(self, entry_id: int) -> LedgerEntry:
        with self._lock:
            row = self._db.execute(
                "SELECT id, kind, target, description, spec, session, host, pid, opened_at,"
                " closed_at, outcome FROM entries WHERE id = ?",
                (entry_id,),
            ).fetchone()
        if row is None:
            raise KeyError(entry_id)
        return _entry(row)

    def close_db(self) -> None:
        with self._lock:
            self._db.close()


def _entry(row: tuple[Any, ...]) -> LedgerEntry:
    (id_, kind, target, description, spec, session, host, pid, opened, closed, outcome) = row
    return LedgerEntry(
        id=id_,
        kind=kind,
        target=target,
        description=description,
        spec=json.loads(spec),
        session=session,
        host=host,
        pid=pid,
        opened_at=opened,
        closed_at=closed,
        outcome=outcome,
    )
