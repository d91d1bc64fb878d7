"""Cooldown, action caps, circuit breaker and dry-run; all survive an engine restart."""

from __future__ import annotations

import textwrap

import pytest
from test_engine_support import SLEEP, ProcTarget, wait_for

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
