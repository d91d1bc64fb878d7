"""The engine's own rule evaluator: fire on a held breach, and re-check before acting late."""

from __future__ import annotations

from pytest_resilience.engine.alerts import Alert, Rule, RuleEvaluator

RULE = Rule("ErrorRateHighCritical", "error_rate", "above", 0.02, "api", for_s=0)


def _evaluator(reading: dict[str, float | None]) -> tuple[RuleEvaluator, list[Alert]]:
    sent: list[Alert] = []
    return RuleEvaluator([RULE], {"error_rate": lambda: reading["v"]}, sent.append), sent


def test_a_held_alert_whose_breach_ended_is_forgotten_and_can_fire_again() -> None:
    reading: dict[str, float | None] = {"v": 0.05}
    evaluator, sent = _evaluator(reading)
    evaluator.tick(now=100)
    (fired,) = sent
    assert evaluator.still_breached(fired)

    reading["v"] = 0.001
    assert not evaluator.still_breached(fired)
    reading["v"] = 0.05
    evaluator.tick(now=101)
    assert [a.status for a in sent] == ["firing", "firing"]  # fired afresh, no resolve between


def test_no_data_is_not_a_breach_worth_acting_on() -> None:
    reading: dict[str, float | None] = {"v": 0.05}
    evaluator, sent = _evaluator(reading)
    evaluator.tick(now=100)
    reading["v"] = None  # the load stopped: nothing current says users still suffer
    assert not evaluator.still_breached(sent[0])


def test_an_alert_from_elsewhere_is_trusted() -> None:
    evaluator, _ = _evaluator({"v": 0.0})
    webhook_alert = Alert(name="DiskFull", target="postgres", source="alertmanager")
    assert evaluator.still_breached(webhook_alert)  # Alertmanager re-sends what still fires
