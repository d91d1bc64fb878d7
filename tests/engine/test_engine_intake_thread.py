"""The webhook's 200 waits for the inbox write only, never for the decision path.

A platform listing can take seconds (an API server under load); the alerts of every body
arriving meanwhile are durable as soon as the intake has written them to the inbox, so
they are answered then, while the dispatcher is still held.
"""

from __future__ import annotations

import sqlite3
import threading

import requests
from engine_support import wait_for
from test_engine_intake_durability import CRASH_LOOP, StalledTarget, alert, body

from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Engine
from pytest_resilience.targets.base import Pod


class HeldTarget(StalledTarget):
    """A platform whose pod listing waits until ``release`` is set (``listing`` says so)."""

    name = "held"

    def __init__(self) -> None:
        self.dir = None
        self.listing = threading.Event()
        self.release = threading.Event()

    def pods(self, selector: str = "", *, namespace: str | None = None) -> list[Pod]:
        self.listing.set()
        self.release.wait(60)
        return super().pods(selector, namespace=namespace)


def count(db, sql: str) -> int:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def test_a_body_is_answered_200_while_the_dispatcher_waits_on_the_platform(tmp_path):
    target = HeldTarget()
    db = tmp_path / "engine.db"
    engine = Engine(
        target, playbooks_dir=BUNDLED_PLAYBOOKS, store_path=db, dry_run=True,
        listen="127.0.0.1:0",
    ).start()  # fmt: skip
    try:
        url = f"{engine.webhook_url}/alerts"
        assert requests.post(url, json=body("g1", CRASH_LOOP), timeout=30).status_code == 200
        wait_for(target.listing.is_set, what="dispatcher held in the platform listing")
        memory = alert("HighMemoryUsage", "mem", service="api")
        # a 200 here, while held: the inbox write is the durability point, not the decision
        answer = requests.post(url, json=body("g2", memory), timeout=10)
        assert answer.status_code == 200 and answer.json()["accepted"] == 1
        assert count(db, "SELECT COUNT(*) FROM inbox WHERE fingerprint='mem'") == 1
        assert count(db, "SELECT COUNT(*) FROM alerts") == 0  # answered, not decided yet
        target.release.set()
        assert engine.wait_idle(60)
        assert engine.store.alert_decisions() == {"incident": 2}
        assert count(db, "SELECT COUNT(*) FROM inbox") == 0
    finally:
        target.release.set()
        engine.close()
