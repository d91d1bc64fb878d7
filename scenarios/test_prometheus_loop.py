"""The whole detection loop through real servers, and the same scenario on the built-in path.

Every API pod leaks its database pool (T0). On the "alertmanager" path a real Prometheus
scrapes the pods (1 s), its DatabaseConnectionPoolExhaustion rule goes pending, then firing
after its ``for``; a real Alertmanager groups it and POSTs it to the engine's webhook; the
engine resets and grows the pool; the rule resolves and Alertmanager tells the engine.
The pool SLO is a PromQL expression on that same Prometheus. On the "built-in" path the
engine's own rule over the pods' /metrics raises the alert and the pool SLO reads the same
built-in probe. Both print where detection time went.

The "alertmanager" variant needs the Debian packages prometheus and prometheus-alertmanager:
it skips without them, and fails under CI (``CI`` set), where they must be installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from remediation_faults import ConnectionLeak

from pytest_resilience.monitoring import loop_split
from pytest_resilience.timeline import ALERT_FIRED, ALERT_RESOLVED, STEADY_STATE

# The leak goes in through each pod's admin hooks; the built-in path reads its /metrics.
pytestmark = pytest.mark.chaos(requires=["pod_admin", "pod_metrics"])

STRATEGY = "Resource Exhaustion"
ALERT = "DatabaseConnectionPoolExhaustion"


@pytest.fixture
def pool_restored(chaos_target) -> Iterator[None]:
    """The grown pool stays with these pods: replace them once the scenario is over."""
    yield
    chaos_target.restart("api")
    chaos_target.wait_ready("api", timeout=60, replicas=3)


@pytest.fixture
def inject(_chaos_faults) -> Callable[[Any], Any]:
    return _chaos_faults.inject


@pytest.fixture
def loop_path(remediation_alerts, chaos_monitoring) -> str:
    """Skip (fail under CI) the real loop without the servers, before the engine starts."""
    if remediation_alerts == "alertmanager" and not chaos_monitoring.routes_alerts:
        reason = (
            "the real loop needs prometheus and prometheus-alertmanager; "
            f"{chaos_monitoring.describe()}"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip", pytrace=False)
        pytest.skip(reason)
    return remediation_alerts


THROUGH_THE_SERVERS = pytest.param(
    "alertmanager", marks=pytest.mark.chaos(needs=["prometheus", "alertmanager"])
)


@pytest.mark.parametrize("remediation_alerts", [THROUGH_THE_SERVERS, "built-in"])
def test_leaked_pool_detected_healed_and_resolved(
    loop_path, pool_restored, chaos_monitoring, load, slo, inject, remediation_engine, timeline,
):  # fmt: skip
    through_servers = loop_path == "alertmanager"
    if through_servers:
        chaos_monitoring.wait_scraped(timeout=20)  # replaced pods show up 5-10 s late
        slo.promql("pool_use", below=0.9, window_s=2)  # the demo's PromQL form
    else:
        slo.probe("pool_use", remediation_engine.probes["pool_use"], below=0.9, window_s=2)
    slo.error_rate(below=0.01, window_s=5)

    with load(users=10, spawn_rate=10) as run:
        run.wait_for_samples(4, timeout=30)
        slo.assert_holds()
        timeline.mark(STEADY_STATE, "pool and errors within their SLOs")

        inject(ConnectionLeak("api"))  # T0
        remediation_engine.wait_for_action(STRATEGY, action="grow_pool", timeout=30)
        remediation_engine.wait_settled(timeout=40)
        remediation_engine.assert_strategy_ran(
            STRATEGY, actions=["close_idle_connections", "grow_pool"]
        )
        recovered_s = slo.assert_recovers(within_s=40)
        t0 = timeline.t0
        assert timeline.wait_for(
            lambda: bool(timeline.events(ALERT_RESOLVED, since=t0)), timeout=20
        ), "the alert never resolved at the engine"

    fired = timeline.first(ALERT_FIRED, since=t0)
    assert fired is not None and fired.name == ALERT
    assert fired.detail["source"] == ("alertmanager" if through_servers else "rule")
    remediation_engine.assert_no_page()
    figures = timeline.figures()
    print(f"\n{loop_path}: detect {figures.time_to_detect:.2f} s, recover {recovered_s} s")
    if through_servers:
        split = loop_split(chaos_monitoring.prometheus_url, timeline, mark=False)
        assert split is not None and split.alert == ALERT
        assert min(split.scrape, split.evaluate, split.rule_for, split.alertmanager) >= 0
        assert split.rule_for >= 1.5  # the rule's `for: 2s`, give or take an evaluation
        print(f"split: {split.as_dict()}")
    else:
        pending_since = fired.detail["starts_at"]
        print(f"split: probe breached after {pending_since - t0:.2f} s, rule for "
              f"{fired.at - pending_since:.2f} s")  # fmt: skip
