"""The remediation engine heals the demo system, one scenario per bundled strategy.

Each scenario: load on, steady state holds, a real fault goes in (T0), the engine's own
rule or the platform's events raise the alert (time to detect), the playbook's strategy
acts and its verify passes, the SLOs come back within the stated time, and nobody is
paged. The last one is the exception: a fault no playbook can fix, and exactly one page.

HighCPU -> scale up has no scenario: on a 2-core machine shared with the load generator,
adding a replica adds no CPU, so the only "fix" would be the load generator itself
slowing down. Its strategy is covered by tests/engine/test_engine_strategies.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from remediation_faults import (
    CacheCrowdOut,
    ConnectionLeak,
    CrashLoop,
    MemoryHog,
)

from pytest_resilience.slo import Objective
from pytest_resilience.timeline import ESCALATED

# The faults go in through each pod's admin hooks, the engine reads its /metrics, and
# api_restored puts the release back.
pytestmark = pytest.mark.chaos(requires=["pod_admin", "pod_metrics", "releases"])

USERS = {"users": 20, "spawn_rate": 20}


@pytest.fixture
def api_restored(chaos_target) -> Iterator[dict[str, bool]]:
    """Put the api back as the session started it (3 replicas of v1, nodes schedulable).

    Requested first, so it is torn down last: after the engine stopped and faults reverted.
    ``restart`` set by a scenario also replaces the pods (a grown pool, a cleared leak).
    """
    flags = {"restart": False}
    yield flags
    for node in chaos_target.nodes():
        if not node.schedulable:
            chaos_target.uncordon(node.name)
    api = next(w for w in chaos_target.workloads() if w.name == "api")
    if api.version != "v1":
        chaos_target.rollout("api", "v1")
    if api.replicas != 3:
        chaos_target.scale("api", 3)
    if flags["restart"]:
        chaos_target.restart("api")
    chaos_target.wait_ready("api", timeout=60, replicas=3)


@pytest.fixture
def inject(_chaos_faults) -> Callable[[Any], Any]:
    """Inject one of remediation_faults' faults through the scenario's FaultSession."""
    return _chaos_faults.inject


@contextmanager
def recorded(timeline, probe: Callable[[], float | None], series: str) -> Iterator[None]:
    """Record ``probe`` into the timeline series ``series`` twice a second (for an SLO)."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            try:
                value = probe()
            except Exception:
                value = None
            if value is not None:
                timeline.record(series, {"value": value})

    thread = threading.Thread(target=sample, name=f"record-{series}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def steady(run, slo) -> None:
    run.wait_for_samples(4, timeout=30)
    slo.assert_holds()


def test_bad_release_is_rolled_back(api_restored, load, slo, bad_deploy, remediation_engine):
    """v2 fails 10% of item requests: the error-rate rule fires and the engine rolls back."""
    slo.error_rate(below=0.01, window_s=5)
    with load(**USERS) as run:
        steady(run, slo)
        bad_deploy("api", version="v2")
        remediation_engine.wait_for_action("High Error Rate", action="rollback", timeout=30)
        remediation_engine.wait_settled(timeout=60)
        remediation_engine.assert_strategy_ran("High Error Rate", actions=["rollback"])
        slo.assert_recovers(within_s=40)
    remediation_engine.assert_no_page()


def test_crash_loop_gets_a_fresh_restart(api_restored, load, slo, inject, remediation_engine):
    """A replica is killed three times in a row: PodCrashLoop from the platform's events."""
    slo.error_rate(below=0.01, window_s=5)
    with load(**USERS) as run:
        steady(run, slo)
        inject(CrashLoop("api", deaths=3))
        remediation_engine.wait_for_action("Pod Crash Loop", action="restart_pod", timeout=30)
        remediation_engine.wait_settled(timeout=60)
        remediation_engine.assert_strategy_ran("Pod Crash Loop", actions=["restart_pod"])
        slo.assert_recovers(within_s=40)
    remediation_engine.assert_no_page()


def test_crowded_out_cache_is_invalidated_and_warmed(
    api_restored, load, slo, inject, remediation_engine, timeline
):
    """Stale keys evict the hot set: hit ratio collapses; invalidate + warm brings it back."""
    slo.error_rate(below=0.01, window_s=5)
    slo.add(Objective("cache_hit_ratio", "probe", 0.75, 3, series="cache_hit_ratio",
                      direction="above"))  # fmt: skip
    hit_ratio = remediation_engine.probes["cache_hit_ratio"]
    with load(**USERS) as run, recorded(timeline, hit_ratio, "cache_hit_ratio"):
        steady(run, slo)
        inject(CacheCrowdOut("redis"))
        remediation_engine.wait_for_action("Resource Exhaustion", action="warm_cache", timeout=30)
        remediation_engine.wait_settled(timeout=60)
        remediation_engine.assert_strategy_ran(
            "Resource Exhaustion", actions=["invalidate_cache", "warm_cache"]
        )
        slo.assert_recovers(within_s=40)
    remediation_engine.assert_no_page()


def test_leaked_pool_is_reset_and_grown(api_restored, load, slo, inject, remediation_engine):
    """Every pod leaks its whole pool: reset it (abandoning the leak) and grow it by half."""
    api_restored["restart"] = True  # the grown pool stays with these pods
    slo.error_rate(below=0.01, window_s=5)
    with load(**USERS) as run:
        steady(run, slo)
        inject(ConnectionLeak("api"))
        remediation_engine.wait_for_action("Resource Exhaustion", action="grow_pool", timeout=30)
        remediation_engine.wait_settled(timeout=60)
        remediation_engine.assert_strategy_ran(
            "Resource Exhaustion", actions=["close_idle_connections", "grow_pool"]
        )
        slo.assert_recovers(within_s=40)
    remediation_engine.assert_no_page()


def test_memory_hog_gc_then_scale_up_and_drain(
    api_restored, load, slo, inject, remediation_engine, timeline
):
    """One pod holds 94% of its limit: GC cannot free live ballast, scale-up + drain can."""
    slo.error_rate(below=0.01, window_s=5)
    slo.add(Objective("memory_share", "probe", 0.85, 2, series="memory_share"))
    share = remediation_engine.probes["memory_share"]
    with load(**USERS) as run, recorded(timeline, share, "memory_share"):
        steady(run, slo)
        inject(MemoryHog("api", share=0.94))
        remediation_engine.wait_for_action("Resource Exhaustion", action="drain_pod", timeout=45)
        remediation_engine.wait_settled(timeout=60)
        gc_step = remediation_engine.assert_strategy_ran(
            "Resource Exhaustion", actions=["trigger_gc"], outcome="not_fixed"
        )
        scale_step = remediation_engine.assert_strategy_ran(
            "Resource Exhaustion", actions=["scale_up", "drain_pod"]
        )
        assert (gc_step.step, scale_step.step) == ("relieve pressure", "add capacity")
        slo.assert_recovers(within_s=60)
    remediation_engine.assert_no_page()


@pytest.mark.chaos(requires=["node_outage"])
def test_failed_node_is_drained_and_replaced(
    api_restored, load, slo, node_failure, remediation_engine, chaos_target
):
    """The node with the most api pods hangs (they stay on it, answering nothing):
    NodeNotReady, the engine drains it, the pods come up elsewhere."""
    slo.error_rate(below=0.01, window_s=5)
    on_node = Counter(p.node for p in chaos_target.pods() if p.workload == "api")
    failed, _ = on_node.most_common(1)[0]
    with load(**USERS) as run:
        steady(run, slo)
        node_failure(failed, hang=True)
        remediation_engine.wait_for_action(
            "Node Not Ready", action="drain_and_replace_node", timeout=30
        )
        remediation_engine.wait_settled(timeout=60)
        remediation_engine.assert_strategy_ran("Node Not Ready", actions=["drain_and_replace_node"])
        # Recovery before the pods check: a --remediation-baseline twin fails the check (nothing
        # drained), and its recovery is watched only until its first failed assertion.
        slo.assert_recovers(within_s=40)
        api = [p for p in chaos_target.pods() if p.workload == "api"]
        assert failed not in {p.node for p in api} and all(p.ready for p in api), api
    remediation_engine.assert_no_page()


def test_leak_that_keeps_leaking_pages_once(
    api_restored, load, slo, inject, remediation_engine, local_pager, timeline
):
    """The leaking path keeps running: reset and restart cannot hold; one page goes out."""
    api_restored["restart"] = True
    slo.error_rate(below=0.01, window_s=5)
    with load(**USERS) as run:
        steady(run, slo)
        inject(ConnectionLeak("api", keep_leaking=True))
        remediation_engine.wait_for_action(
            "Resource Exhaustion", action="graceful_restart", timeout=40
        )
        (incident,) = [
            i
            for i in remediation_engine.wait_settled(timeout=60)
            if i.alert_name == "DatabaseConnectionPoolExhaustion"
        ]
        assert incident.status == "escalated", incident.reason
        assert timeline.wait_for(lambda: len(local_pager.triggers()) >= 1, timeout=15)
    remediation_engine.assert_strategy_ran(
        "Resource Exhaustion", actions=["graceful_restart"], outcome="not_fixed"
    )
    (page,) = local_pager.triggers()
    assert (page["alert"], page["incident"]) == ("DatabaseConnectionPoolExhaustion", incident.id)
    assert [e.name for e in timeline.events(ESCALATED)] == ["DatabaseConnectionPoolExhaustion"]
