"""The store's write discipline: what a transaction holds, and what its commits wait for.

A decision transaction keeps its writes in memory until its commit, so the intake's inbox
write (and with it a webhook's 200) never waits for decisions being computed, only for
another transaction's statements. Commits never run SQLite's automatic checkpoint (two
fsyncs, tens of milliseconds on a shared disk): a background checkpointer does.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest
from engine_support import wait_for

from pytest_resilience.engine import Alert
from pytest_resilience.engine.store import OPEN, Incident, Store


def incident(incident_id: str) -> Incident:
    alert = Alert("HighMemoryUsage", "api")
    return Incident(
        id=incident_id, alert_name=alert.name, target=alert.target, fingerprint="",
        playbook="p", status=OPEN, step=0, severity="warning", summary="s", reason="",
        alert=alert, follow_up=(), dry_run=True, opened_at=1.0, detected_at=1.0,
        updated_at=1.0, closed_at=None,
    )  # fmt: skip


def rows(db, sql: str) -> list[tuple]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_the_inbox_is_written_while_a_decision_transaction_is_still_open(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    try:
        with store.transaction():
            store.open_incident(incident("inc-1"))
            store.update_incident("inc-1", step=1)
            store.set_state("cooldown:HighMemoryUsage|api", 99.0)
            store.action_started("inc-1", "api", 1, "p", "restart_pod", {}, result="dry_run")
            writer = threading.Thread(target=store.receive, args=([[Alert("A", "t")]],))
            writer.start()
            writer.join(timeout=20)
            assert not writer.is_alive(), "the inbox write waited for the open transaction"
            assert rows(db, "SELECT COUNT(*) FROM inbox") == [(1,)]  # committed meanwhile
            assert rows(db, "SELECT COUNT(*) FROM incidents") == [(0,)]  # this one: not yet
            assert store.incident("inc-1").step == 1  # a read in it sees its own writes
            store.update_incident("inc-1", status="dry_run", reason="would have")  # written
        assert rows(db, "SELECT id, step, status, reason FROM incidents") == [
            ("inc-1", 1, "dry_run", "would have")
        ]
        assert rows(db, "SELECT incident_id, result FROM actions") == [("inc-1", "dry_run")]
        assert store.get_state("cooldown:HighMemoryUsage|api") == 99.0
    finally:
        store.close()


def test_an_incident_opened_and_updated_in_one_transaction_is_stored_as_last_updated(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    try:
        with store.transaction():
            store.open_incident(incident("inc-1"))
            store.open_incident(incident("inc-2"))
            store.update_incident("inc-1", step=2)
            store.update_incident("inc-2", status="escalated", reason="cap reached")
            store.update_incident("inc-1", status="dry_run", closed_at=5.0)
        with pytest.raises(RuntimeError), store.transaction():
            store.update_incident("inc-2", status="resolved")  # already written: an UPDATE
            store.open_incident(incident("inc-3"))
            store.update_incident("inc-3", step=4)
            raise RuntimeError("rolled back")
        store.update_incident("inc-2", step=3)  # outside a transaction
    finally:
        store.close()
    assert rows(db, "SELECT id, step, status, reason, closed_at FROM incidents ORDER BY id") == [
        ("inc-1", 2, "dry_run", "", 5.0),
        ("inc-2", 3, "escalated", "cap reached", None),
    ]


def test_a_rolled_back_transaction_leaves_nothing_and_ids_stay_unique(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    try:
        first = store.action_started("inc-0", "api", 0, "p", "x", {})
        with pytest.raises(RuntimeError), store.transaction():
            store.open_incident(incident("inc-1"))
            store.action_started("inc-1", "api", 0, "p", "x", {})
            store.update_incident("inc-1", step=2)
            raise RuntimeError("decision failed")
        assert rows(db, "SELECT COUNT(*) FROM incidents") == [(0,)]
        with store.transaction():
            later = store.action_started("inc-2", "api", 0, "p", "x", {})
        store.action_finished(later, "ok", "done")
    finally:
        store.close()
    reopened = Store(db)  # ids continue after the log's last one
    try:
        again = reopened.action_started("inc-3", "api", 0, "p", "x", {})
    finally:
        reopened.close()
    ids = [i for (i,) in rows(db, "SELECT id FROM actions ORDER BY id")]
    assert ids == [first, later, again] and len(set(ids)) == 3 and first < later < again
    assert rows(db, f"SELECT result FROM actions WHERE id={later}") == [("ok",)]


def test_commits_leave_checkpoints_to_the_checkpointer(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        before = db.stat().st_size
        with store.transaction():
            for i in range(200):
                store.add_alert(Alert("A", f"t{i}", labels={"pad": "x" * 500}), "resolved")
        # far below SQLite's 1000-page mark: only the checkpointer moves these pages
        wait_for(lambda: db.stat().st_size > before + 50_000, what="the WAL checkpointed")
    finally:
        store.close()
    assert rows(db, "SELECT COUNT(*) FROM alerts") == [(200,)]
