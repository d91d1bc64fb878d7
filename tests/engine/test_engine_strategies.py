"""Each strategy of the bundled playbooks: its decision, its action, its verify."""

from __future__ import annotations

import pytest
from engine_support import (
    CRASH,
    SLEEP,
    AdminHooks,
    ProcTarget,
    ThreadedApp,
    fast_playbooks,
    wait_for,
)

from pytest_resilience import timeline as tl
from pytest_resilience.engine import Alert, Engine


@pytest.fixture
def admin():
    hooks = AdminHooks()
    with ThreadedApp(hooks.app) as server:
        hooks.port = server.port
        yield hooks


@pytest.fixture
def target(admin):
    t = ProcTarget(
        {"api": (2, {"v1": SLEEP, "v2": SLEEP, "bad": CRASH}, "v1")}, admin_port=admin.port
    )
    yield t
    t.close()


@pytest.fixture
def make_engine(tmp_path, target):
    engines = []

    def make(probes=None, **kw):
        engine = Engine(
            target,
            playbooks_dir=fast_playbooks(tmp_path / "remediators"),
            store_path=tmp_path / "engine.db",
            timeline=tl.Timeline("t"),
            probes=probes or {},
            eval_interval_s=0.05,
            **kw,
        )
        engines.append(engine.start())
        return engine

    yield make
    for engine in engines:
        engine.close()


def settled(engine: Engine):
    return wait_for(
        lambda: engine.incidents() and all(not i.open for i in engine.incidents()),
        what="incident closed",
    )


def only_incident(engine: Engine):
    settled(engine)
    (incident,) = engine.incidents()
    return incident


def test_crash_loop_restart_then_rollback(make_engine, target):
    engine = make_engine()
    target.rollout("api", "bad")  # pods now exit at once: the platform restarts them
    incident = only_incident(engine)
    assert (incident.alert_name, incident.status) == ("PodCrashLoop", "resolved")
    runs = engine.strategies_run()
    assert [(r.step, r.actions, r.outcome) for r in runs] == [
        ("restart pod", ("restart_pod",), "not_fixed"),
        ("roll back", ("rollback",), "fixed"),
    ]
    assert target.version("api") == "v1"
    marks = [(e.kind, e.name) for e in engine.timeline.events()]
    assert (tl.ALERT_FIRED, "PodCrashLoop") in marks
    finished = engine.timeline.events(tl.ACTION_FINISHED)
    assert [(e.name, e.detail["ok"], e.detail["strategy"]) for e in finished] == [
        ("restart_pod", True, "Pod Crash Loop"),
        ("rollback", True, "Pod Crash Loop"),
    ]


def test_memory_gc_is_enough(make_engine, target, admin):
    memory = {"share": 0.93}
    admin.effects["/admin/gc"] = lambda r: memory.update(share=0.5) or {"freed": True}
    engine = make_engine(probes={"memory_share": lambda: memory["share"]})
    engine.submit(Alert("HighMemoryUsage", "api", labels={"resource": "memory"}, value=0.93))
    incident = only_incident(engine)
    assert incident.status == "resolved"
    assert admin.calls == ["/admin/gc", "/admin/gc"]  # both pods
    assert not [c for c in target.calls if c.startswith("scale")]


def test_memory_still_high_scales_up_and_drains_old_pod(make_engine, target, admin):
    leaky = target.pods()[0].name
    share = lambda: 0.95 if leaky in {p.name for p in target.pods()} else 0.4  # noqa: E731
    engine = make_engine(probes={"memory_share": share})
    engine.submit(Alert("HighMemoryUsage", "api", labels={"pod": leaky}, value=0.93))
    incident = only_incident(engine)
    assert incident.status == "resolved"
    assert [(r.step, r.actions, r.outcome) for r in engine.strategies_run()] == [
        ("relieve pressure", ("trigger_gc",), "not_fixed"),
        ("add capacity", ("scale_up", "drain_pod"), "fixed"),
    ]
    assert "scale api 3" in target.calls and f"replace_pod {leaky}" in target.calls
    # the GC step was judged at its first bad sample: the rest of its window could not
    # have made it "fixed", so the next step did not wait for it
    (gc, _) = engine.store.verifications(incident.id)
    assert (gc.outcome, gc.detail) == ("not_fixed", "1 of 1 samples broke it (worst 0.95)")


def test_memory_at_critical_level_skips_gc(make_engine, target, admin):
    engine = make_engine(probes={"memory_share": lambda: 0.5})
    engine.submit(Alert("HighMemoryUsage", "api", value=0.99))
    assert only_incident(engine).status == "resolved"
    assert admin.calls == []
    assert engine.strategies_run()[0].actions == ("scale_up", "drain_pod")


def test_pool_exhaustion_grows_pool_by_half(make_engine, admin):
    pool = {"use": 0.99}
    admin.effects["/admin/pool/reset"] = lambda r: {"max": 10}
    admin.effects["/admin/pool/resize"] = lambda r: pool.update(use=0.6) or {"max": 15}
    engine = make_engine(probes={"pool_use": lambda: pool["use"]})
    engine.submit(Alert("DatabaseConnectionPoolExhaustion", "api", value=0.99))
    assert only_incident(engine).status == "resolved"
    assert "/admin/pool/resize?max=15" in admin.calls
    assert admin.calls.index("/admin/pool/reset") < admin.calls.index("/admin/pool/resize?max=15")


def test_pool_still_over_95_percent_restarts(make_engine, target, admin):
    before = {p.name for p in target.pods()}
    admin.effects["/admin/pool/reset"] = lambda r: {"max": 10}
    use = lambda: 0.97 if before & {p.name for p in target.pods()} else 0.3  # noqa: E731
    engine = make_engine(probes={"pool_use": use})
    engine.submit(Alert("DatabaseConnectionPoolExhaustion", "api"))
    assert only_incident(engine).status == "resolved"
    assert [r.step for r in engine.strategies_run()] == ["relieve pressure", "graceful restart"]
    assert "restart api" in target.calls


@pytest.mark.parametrize(("after", "status"), [(0.9, "resolved"), (0.5, "warned")])
def test_cache_hit_ratio(make_engine, admin, after, status):
    ratio = {"value": 0.4}
    admin.effects["/admin/cache/warm"] = lambda r: ratio.update(value=after) or {}
    engine = make_engine(probes={"cache_hit_ratio": lambda: ratio["value"]})
    engine.submit(Alert("CacheHitRatioDegraded", "api", value=0.4))
    incident = only_incident(engine)
    assert incident.status == status  # below 0.75 after warming: a warning, not a page
    assert admin.calls == ["/admin/cache/invalidate"] * 2 + ["/admin/cache/warm"] * 2


@pytest.mark.parametrize("alert", ["DeploymentFailure", "ErrorRateHighCritical"])
def test_bad_release_is_rolled_back(make_engine, target, alert):
    target.rollout("api", "v2")
    engine = make_engine(probes={"error_rate": lambda: 0.3 if target.version("api") == "v2" else 0})
    engine.submit(Alert(alert, "api", severity="critical"))
    assert only_incident(engine).status == "resolved"
    assert target.version("api") == "v1" and "rollback api" in target.calls


def test_node_not_ready_is_drained_and_replaced(make_engine, target):
    engine = make_engine()
    target.fail_node("node-a")
    incident = only_incident(engine)
    assert (incident.alert_name, incident.status) == ("NodeNotReady", "resolved")
    assert target.calls[:2] == ["cordon node-a", "drain node-a"]
    assert {p.node for p in target.pods()} == {"node-b"}


def test_high_cpu_scales_up(make_engine, target):
    engine = make_engine(probes={"cpu_share": lambda: 0.9 if len(target.pods()) < 3 else 0.5})
    engine.submit(Alert("HighCPU", "api"))
    assert only_incident(engine).status == "resolved"
    assert "scale api 3" in target.calls


def test_rule_over_probe_detects_and_timeline_has_the_figures(make_engine, target, admin):
    memory = {"share": 0.5}
    admin.effects["/admin/gc"] = lambda r: memory.update(share=0.5) or {}
    engine = make_engine(probes={"memory_share": lambda: memory["share"]})
    engine.timeline.mark(tl.FAULT_INJECTED, "memory_stress")
    memory["share"] = 0.95
    incident = only_incident(engine)
    assert (incident.alert_name, incident.alert.source, incident.status) == (
        "HighMemoryUsage",
        "rule",
        "resolved",
    )
    figures = engine.timeline.figures()
    assert figures.time_to_detect is not None and figures.healed_by == "engine"
    assert figures.time_to_mitigate >= figures.time_to_detect
    kinds = [e.kind for e in engine.timeline.events()]
    assert kinds.index(tl.ALERT_FIRED) < kinds.index(tl.ACTION_STARTED) < kinds.index(tl.VERIFIED)
