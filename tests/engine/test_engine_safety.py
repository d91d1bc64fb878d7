"""Cooldown, action caps, circuit breaker and dry-run; all survive an engine restart."""

from __future__ import annotations

import textwrap

import pytest
from engine_support import SLEEP, ProcTarget, wait_for

from pytest_resilience.engine import Alert, Engine, SafetyPolicy

PLAYBOOK = """\
playbook: Flaky
alerts: [Flaky]
steps:
  - name: restart
    actions: [graceful_restart]
    verify: {wait: 0s, window: 0.1s, interval: 0.05s,
             condition: {probe: health, above: 0.5}, on_not_fixed: escalate}
"""


@pytest.fixture
def target():
    t = ProcTarget({name: (1, {"v1": SLEEP}, "v1") for name in ("a", "b", "c", "d")})
    yield t
    t.close()


@pytest.fixture
def books(tmp_path):
    directory = tmp_path / "books"
    directory.mkdir()
    (directory / "flaky.yaml").write_text(textwrap.dedent(PLAYBOOK))
    return directory


def engine(target, books, tmp_path, health, **kw):
    kw.setdefault("safety", SafetyPolicy(cooldown_s=3600, breaker_failures=3))
    return Engine(target, playbooks_dir=books, store_path=tmp_path / "e.db",
                  probes={"health": lambda: health["value"]}, **kw).start()  # fmt: skip


def idle(e):
    assert e.wait_idle(20)


def test_flapping_alert_gets_one_action_per_cooldown_even_across_restart(target, books, tmp_path):
    health = {"value": 1.0}
    e = engine(target, books, tmp_path, health)
    try:
        for _ in range(10):
            e.submit(Alert("Flaky", "a"))
            idle(e)
            e.submit(Alert("Flaky", "a").resolved())
            idle(e)
    finally:
        e.close()
    e = engine(target, books, tmp_path, health)  # restarted: the cooldown holds
    try:
        e.submit(Alert("Flaky", "a"))
        idle(e)
        assert [a.action for a in e.actions()] == ["graceful_restart"]
        assert len(e.incidents()) == 1
        suppressed = sum(n for d, n in e.store.alert_decisions().items() if "cooldown" in d)
        assert suppressed == 10
    finally:
        e.close()


def test_circuit_breaker_opens_after_repeated_failure_and_stays_open(target, books, tmp_path):
    health = {"value": 0.0}  # nothing the engine does helps
    e = engine(target, books, tmp_path, health)
    try:
        for name in ("a", "b", "c"):
            e.submit(Alert("Flaky", name))
            idle(e)
        assert [i.status for i in e.incidents()] == ["escalated"] * 3
        assert len(e.actions()) == 3
    finally:
        e.close()
    e = engine(target, books, tmp_path, health)
    try:
        e.submit(Alert("Flaky", "d"))
        idle(e)
        last = e.incidents()[-1]
        assert (last.target, last.status) == ("d", "escalated")
        assert "circuit breaker open" in last.reason
        assert len(e.actions()) == 3  # no new action while the breaker is open
    finally:
        e.close()


def test_action_caps_escalate_instead_of_acting(target, books, tmp_path):
    health = {"value": 1.0}
    policy = SafetyPolicy(cooldown_s=0, max_actions_per_target=2, max_actions_total=3)
    e = engine(target, books, tmp_path, health, safety=policy)
    try:
        for name in ("a", "a", "a", "b", "c"):
            e.submit(Alert("Flaky", name))
            idle(e)
            e.submit(Alert("Flaky", name).resolved())
            idle(e)
        reasons = [(i.target, i.status, i.reason) for i in e.incidents()]
        assert len(e.actions()) == 3
        # escalated (then resolved when the alert cleared), never acted on
        assert reasons[2][0] == "a" and "action cap for 'a' reached" in reasons[2][2]
        assert reasons[4][0] == "c" and "overall action cap reached" in reasons[4][2]
    finally:
        e.close()


def test_dry_run_records_what_it_would_have_done(target, books, tmp_path):
    health = {"value": 0.0}
    before = [p.name for p in target.pods()]
    e = engine(target, books, tmp_path, health, dry_run=True)
    try:
        e.submit(Alert("Flaky", "a"))
        wait_for(lambda: e.incidents() and e.incidents()[0].status == "dry_run")
        (record,) = e.actions()
        assert record.result == "dry_run"
        assert record.detail == "would have done: graceful_restart()"
        assert [p.name for p in target.pods()] == before and target.calls == []
    finally:
        e.close()


def _logged(db, since, target):
    import sqlite3

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        total, on = connection.execute(
            "SELECT COUNT(*), COALESCE(SUM(target=?), 0) FROM actions WHERE started_at>=?",
            (target, since),
        ).fetchone()
    finally:
        connection.close()
    return total, on


def test_the_caps_count_from_memory_what_the_action_log_holds_across_rollback_and_restart(
    tmp_path,
):
    from pytest_resilience.engine.store import Store

    db = tmp_path / "e.db"
    store = Store(db)
    store.action_started("i1", "a", 0, "S", "x", {}, at=100.0)  # outside a transaction
    with store.transaction():
        store.action_started("i2", "a", 0, "S", "x", {}, at=300.0)
        store.action_started("i3", "b", 0, "S", "x", {}, at=200.0)  # out of order
        assert store.action_counts(150.0, "a") == (2, 1)  # the transaction sees its own
    with pytest.raises(RuntimeError), store.transaction():
        store.action_started("i4", "b", 0, "S", "x", {}, at=400.0)
        raise RuntimeError("rolled back: its action never happened")
    queries = [(since, t) for since in (0.0, 100.0, 150.0, 200.0, 301.0, 500.0)
               for t in ("a", "b", "c")]  # fmt: skip
    logged = [_logged(db, s, t) for s, t in queries]
    assert [store.action_counts(s, t) for s, t in queries] == logged
    store.close()
    reopened = Store(db)  # a restarted engine's store: the index rebuilt from the log
    try:
        assert [reopened.action_counts(s, t) for s, t in queries] == [
            _logged(db, s, t) for s, t in queries
        ]
        assert reopened.count_actions(150.0) == 2 and reopened.count_actions(0.0, target="b") == 1
    finally:
        reopened.close()


def test_the_overall_and_per_target_caps_hold_across_a_restart_in_a_dry_run_storm(tmp_path):
    from test_engine_intake_durability import StalledTarget

    from pytest_resilience.engine import BUNDLED_PLAYBOOKS

    policy = SafetyPolicy(cooldown_s=3600, max_actions_per_target=1, max_actions_total=4)

    def start():
        return Engine(StalledTarget(), playbooks_dir=BUNDLED_PLAYBOOKS, dry_run=True,
                      store_path=tmp_path / "e.db", safety=policy).start()  # fmt: skip

    names = ["HighMemoryUsage", "HighCPU", "DatabaseConnectionPoolExhaustion"]
    for round_ in range(2):
        e = start()
        try:
            for i in range(6):
                for name in names:
                    e.submit(Alert(name, f"svc-{i}-{round_}" if i else "svc-0"))
            idle(e)
            actions = e.actions()
        finally:
            e.close()
        per_target: dict[str, int] = {}
        for action in actions:
            per_target[action.target] = per_target.get(action.target, 0) + 1
        assert len(actions) == 4, actions  # the overall cap, the second round included
        assert max(per_target.values()) == 1, per_target
