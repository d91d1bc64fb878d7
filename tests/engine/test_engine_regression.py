"""``python -m pytest_resilience.engine scenario``: an incident becomes a regression scenario.

The alert -> fault table against the names real rule sets give (kube-prometheus,
postgres_exporter, node-exporter), and incidents a real engine recorded (over ProcTarget's
real processes, from alerts as Alertmanager delivers them) turned into scenario files that
our own loader reads back. The errors a user meets say what to do and exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import Engine
from pytest_resilience.engine.__main__ import build_parser
from pytest_resilience.engine.alerts import Alert
from pytest_resilience.engine.intake import parse_payload
from pytest_resilience.engine.regression import (
    FLOOR_S,
    SAFETY_FACTOR,
    build_regression,
    recovery_bound,
)
from pytest_resilience.engine.replays import REPLAYS, NoReplay, replay_for
from pytest_resilience.engine.store import Store
from pytest_resilience.scenario import FAULTS, Expectation, load_scenario

PAYLOADS = Path(__file__).parents[1] / "payloads"

#: (alert as its rule set spells it, fault that replays it)
REAL_NAMES = [
    ("KubePodCrashLooping", "pod_kill"),  # kube-prometheus, kubernetes-mixin apps_alerts
    ("KubernetesPodCrashLooping", "pod_kill"),  # awesome-prometheus-alerts
    ("PodCrashLoop", "pod_kill"),  # the engine's own, from target events
    ("KubePodNotReady", "pod_kill"),
    ("KubeDeploymentReplicasMismatch", "pod_kill"),
    ("KubeNodeNotReady", "node_failure"),
    ("KubeNodeUnreachable", "node_failure"),
    ("NodeNotReady", "node_failure"),
    ("NodeFilesystemSpaceFillingUp", "disk_fill"),  # node-exporter node-mixin
    ("NodeFilesystemAlmostOutOfSpace", "disk_fill"),
    ("KubePersistentVolumeFillingUp", "disk_fill"),
    ("ContainerHighMemoryUsage", "memory_stress"),  # cadvisor
    ("KubernetesContainerOomKiller", "memory_stress"),
    ("HighMemoryUsage", "memory_stress"),
    ("PostgresqlTooManyConnections", "latency"),  # postgres_exporter
    ("PostgreSQLMaxConnectionsReached", "latency"),
    ("DatabaseConnectionPoolExhaustion", "latency"),
    ("PostgresqlDown", "network_block"),
    ("RedisDown", "network_block"),
    ("HighLatency", "latency"),
    # names no row lists, caught by the word that says what broke
    ("CheckoutP99LatencyHigh", "latency"),
    ("WorkerNodeDown", "node_failure"),
    ("CephOsdDiskFull", "disk_fill"),
]


@pytest.mark.parametrize(("alert", "fault"), REAL_NAMES)
def test_real_alert_names_map_to_their_fault(alert, fault):
    assert replay_for(alert).fault == fault


def test_every_row_names_a_fault_of_the_scenario_format():
    assert {r.fault for r in REPLAYS} <= set(FAULTS)
    names = [name for r in REPLAYS for name in r.alerts]
    assert len(names) == len(set(names)), "an alert name in two rows"


@pytest.mark.parametrize("alert", ["ErrorRateHighCritical", "CacheHitRatioDegraded", "HighCPU"])
def test_a_symptom_with_no_cause_in_it_is_refused_naming_it(alert):
    with pytest.raises(NoReplay) as info:
        replay_for(alert)
    assert repr(alert) in str(info.value) and "by hand" in str(info.value)


def test_the_bound_is_the_engine_time_times_the_factor_with_a_floor():
    assert SAFETY_FACTOR == 2.0 and FLOOR_S == 30.0
    assert recovery_bound(34.6) == 70.0  # 69.2 rounded up to 5 s
    assert recovery_bound(3.0) == 30.0  # the floor: one fast run is no promise
    assert recovery_bound(None) == 30.0  # never recovered: the floor


def test_every_option_has_a_help_line():
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in choices["scenario"]._actions
        if not (a.help or "").strip()
    ]
    assert missing == []


# -- incidents a real engine recorded ----------------------------------------------------


def _payload_alert(name: str) -> Alert:
    text = (PAYLOADS / name).read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    _, (alert,) = parse_payload(json.loads(body))
    return alert


SLOW_API = """\
playbook: Slow API
alerts: [HighLatency]
steps:
  - name: add a replica
    actions: [{action: scale_up, by: 1}]
    verify: {wait: 0.2s, window: 0.3s, condition: {probe: error_rate, below: 0.02}}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, str]:
    """A store a real engine wrote, and the incident id of each case by its alert name."""
    tmp = tmp_path_factory.mktemp("regression")
    books = fast_playbooks(tmp / "books")
    (books / "slow-api.yaml").write_text(SLOW_API)
    target = ProcTarget(
        {"api": (2, {"v1": SLEEP, "v2": SLEEP}, "v1"), "postgres": (1, {"v1": SLEEP}, "v1")}
    )
    engine = Engine(
        target,
        playbooks_dir=books,
        store_path=tmp / "engine.db",
        probes={"error_rate": lambda: 0.0},
    )
    engine.start()
    now = time.time()
    crash = _payload_alert("alertmanager-0.25-kube-pod-crashlooping-firing.body")
    # the recording is from another day and namespace; here it is now, in the target's one
    crash = replace(crash, labels={**crash.labels, "namespace": "default"}, starts_at=now - 4)
    elsewhere = replace(crash, labels={**crash.labels, "namespace": "kube-system"},
                        fingerprint="other")  # fmt: skip
    causes = [
        crash,
        elsewhere,
        Alert("NodeFilesystemSpaceFillingUp", "node-exporter", severity="warning",
              labels={"instance": "node-a:9100", "mountpoint": "/var", "job": "node-exporter"}),
        Alert("PostgresqlTooManyConnections", "postgres-exporter", severity="critical",
              labels={"instance": "postgres:9187", "job": "postgres", "datname": "shop"}),
    ]  # fmt: skip
    # one at a time: an error rate on api is held back as a symptom while api is handled,
    # and an incident with no target holds back symptoms on every target (last, then)
    later = [
        Alert("HighLatency", "api", labels={"probe": "latency_p99"}),
        Alert("ErrorRateHighCritical", "api", severity="critical",
              labels={"probe": "error_rate", "error_type": "5xx"}),
        Alert("HighCPU", "api", severity="warning", labels={"probe": "cpu_share"}),
        Alert("HighMemoryUsage", "api", value=0.94, source="rule",
              labels={"pod": "api-1", "resource": "memory", "probe": "memory_share"}),
        Alert("KubeNodeNotReady", "kube-state-metrics", severity="critical",
              labels={"node": "node-b", "job": "kube-state-metrics"}),
        Alert("KubePodNotReady", "", labels={"job": "kube-state-metrics"}),
    ]  # fmt: skip
    try:
        target.rollout("api", "v2")  # the release the error rate is about: rolled back
        target.wait_ready("api", timeout=10)
        for batch in (causes, *([alert] for alert in later)):
            total = len(engine.incidents()) + len(batch)
            for alert in batch:
                engine.submit(alert)
            wait_for(lambda n=total: len(engine.incidents()) == n, what=f"{total} incidents")
            engine.wait_settled(timeout=60)
        ids = {i.alert_name + (":" + i.target if i.target else ""): i.id
               for i in engine.incidents()}  # fmt: skip
    finally:
        engine.close()
        target.close()
    return {"path": str(tmp / "engine.db"), **ids}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_resilience.engine", "scenario", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _written(store, tmp_path, key: str, *options: str):
    out = tmp_path / "scenarios" / "regression.yaml"
    done = cli("--store", store["path"], store[key], "-o", str(out), *options)
    assert done.returncode == 0, done.stderr
    return out, load_scenario(out)


def test_crash_loop_from_alertmanager_is_three_kills_of_its_workload(store, tmp_path):
    out, scenario = _written(store, tmp_path, "KubePodCrashLooping:api")
    # the pod label api-7d9f8b6c5d-xk2mn was traced to its Deployment by the engine
    assert [(s.fault, dict(s.args)) for s in scenario.method] == [
        ("pod_kill", {"selector": "app=api", "count": 1, "replaced_within_s": 30})
    ] * 3
    assert scenario.remediation and scenario.load
    db = Store(store["path"])
    try:
        incident = db.incident(store["KubePodCrashLooping:api"])
    finally:
        db.close()
    assert incident.status == "resolved"
    took = incident.closed_at - incident.alert.starts_at
    assert scenario.recover_within_s == recovery_bound(round(took, 1))
    # no SLO in the store for a crash loop: the standard pair
    assert [(o.signal, o.bound, o.percentile) for o in scenario.slos] == [
        ("error_rate", 0.01, 99),
        ("latency", 2000.0, 99),
    ]
    header = out.read_text().split("\ntitle:")[0]
    assert incident.id in header and "KubePodCrashLooping" in header
    assert "fired 20" in header and "Recovery bound: 2 x" in header
    assert f"scenario --store {store['path']} {incident.id} -o {out}" in header
    # the replay must raise the alert again and the engine heal it as it did, paging nobody
    assert scenario.expect == Expectation(
        alert="KubePodCrashLooping", strategy="Pod Crash Loop", actions=("restart_pod",),
        no_page=True,
    )  # fmt: skip
    # the format asserts that now: the header no longer says it cannot
    assert "Check:" not in header and "cannot assert" not in header
    # an Alertmanager alert's name may differ where the engine's own rules raise it
    assert "expect.alert is the name Alertmanager delivered" in header


def test_the_slos_the_incident_breached_come_from_the_store(store, tmp_path):
    # the alert's probe (p99 latency) and the bound its verify checked (error rate < 2%)
    _, scenario = _written(store, tmp_path, "HighLatency:api", "--proxy", "postgres")
    assert sorted((o.signal, o.bound, o.percentile) for o in scenario.slos) == [
        ("error_rate", 0.02, 99),
        ("latency", 2000.0, 99),
    ]
    ((step),) = scenario.method
    assert (step.fault, dict(step.args)) == ("latency", {"proxy": "postgres", "ms": 500})
    assert step.duration_s >= 10
    db = Store(store["path"])
    try:
        subject = build_regression(db, store["HighLatency:api"], proxy="postgres").subject
    finally:
        db.close()
    assert subject == "proxy postgres (called by workload api)"


def test_latency_felt_by_the_caller_needs_the_dependency_named(store):
    done = cli("--store", store["path"], store["HighLatency:api"])
    assert done.returncode == 2
    assert "--proxy NAME" in done.stderr and "Traceback" not in done.stderr


def test_a_datastore_alert_slows_its_own_proxy_and_a_failed_one_gets_the_floor(store, tmp_path):
    out, scenario = _written(store, tmp_path, "PostgresqlTooManyConnections:postgres")
    ((step),) = scenario.method
    assert (step.fault, step.args["proxy"]) == ("latency", "postgres")
    # the engine could not fix it (no DSN for terminate_idle_connections): it escalated
    assert scenario.recover_within_s == FLOOR_S
    assert "expected to fail until the fix lands" in out.read_text()
    # escalated: no no_page; the step it tried must fix it once the fix lands
    assert scenario.expect == Expectation(
        alert="PostgresqlTooManyConnections", strategy="Resource Exhaustion",
        actions=("terminate_idle_connections",),
    )  # fmt: skip


def test_a_node_disk_alert_fills_the_volume_it_is_told(store, tmp_path):
    key = "NodeFilesystemSpaceFillingUp:node-a"
    done = cli("--store", store["path"], store[key])
    assert done.returncode == 2 and "--volume SERVICE" in done.stderr, done.stderr
    _, scenario = _written(store, tmp_path, key, "--volume", "postgres")
    ((step),) = scenario.method
    assert (step.fault, dict(step.args)) == ("disk_fill", {"service": "postgres", "percent": 90})


def test_a_memory_alert_stresses_the_pod_it_read_to_its_share(store, tmp_path):
    out, scenario = _written(store, tmp_path, "HighMemoryUsage:api")
    ((step),) = scenario.method
    assert (step.fault, dict(step.args)) == (
        "memory_stress",
        {"selector": "app=api", "share": 0.94, "count": 1},
    )
    # memory_share is no SLO a YAML scenario can state: said so, and the standard pair
    assert "memory_share (the alert's probe)" in out.read_text()
    assert {o.signal for o in scenario.slos} == {"error_rate", "latency"}
    # escalated before any action ran: only the alert is expected again
    assert scenario.expect == Expectation(alert="HighMemoryUsage")


def test_a_node_alert_fails_its_node(store, tmp_path):
    _, scenario = _written(store, tmp_path, "KubeNodeNotReady:node-b")
    ((step),) = scenario.method
    assert (step.fault, dict(step.args)) == ("node_failure", {"node": "node-b", "hang": True})


def test_an_error_rate_a_rollback_healed_is_a_bad_release_again(store, tmp_path):
    # the alert names no cause; the action that healed it does
    key = "ErrorRateHighCritical:api"
    done = cli("--store", store["path"], store[key])
    assert done.returncode == 2 and "--release VERSION" in done.stderr, done.stderr
    _, scenario = _written(store, tmp_path, key, "--release", "v2")
    ((step),) = scenario.method
    assert (step.fault, dict(step.args)) == ("bad_deploy", {"workload": "api", "version": "v2"})
    # its verify checked the error rate below 1%: that SLO, and no latency one
    assert [(o.signal, o.bound) for o in scenario.slos] == [("error_rate", 0.01)]
    assert scenario.expect == Expectation(
        alert="ErrorRateHighCritical", strategy="High Error Rate", actions=("rollback",),
        no_page=True,
    )  # fmt: skip


def test_an_alert_no_fault_replays_is_refused_naming_it(store):
    done = cli("--store", store["path"], store["HighCPU:api"])
    assert done.returncode == 2
    assert "no fault replays alert 'HighCPU'" in done.stderr
    assert "healed by: " in done.stderr and "a rollback would" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_incident_with_no_target_is_refused(store):
    done = cli("--store", store["path"], store["KubePodNotReady"])
    assert done.returncode == 2 and "has no target" in done.stderr, done.stderr
    # labels naming a pod of another namespace: the engine acted on nothing, nor do we
    (other,) = [k for k in store if k.startswith("KubePodCrashLooping:api-")]
    done = cli("--store", store["path"], store[other])
    assert done.returncode == 2
    assert "no target the engine could act on" in done.stderr and "kube-system" in done.stderr


def test_unknown_incident_missing_store_and_a_foreign_file_exit_2(store, tmp_path):
    done = cli("--store", store["path"], "inc-000000000000")
    assert done.returncode == 2
    assert "no incident 'inc-000000000000'" in done.stderr and "incidents --store" in done.stderr
    done = cli("--store", str(tmp_path / "nope.db"), "inc-1")
    assert done.returncode == 2 and "no store at" in done.stderr
    assert not (tmp_path / "nope.db").exists()
    foreign = tmp_path / "ledger.sqlite"
    import sqlite3

    sqlite3.connect(foreign).execute("CREATE TABLE entries (id INTEGER)").connection.commit()
    done = cli("--store", str(foreign), "inc-1")
    assert done.returncode == 2 and "not an engine store" in done.stderr
    for done in (cli("--store", str(PAYLOADS / "no-version-no-groupkey.body"), "inc-1"),):
        assert done.returncode == 2 and "Traceback" not in done.stderr


def test_an_existing_file_is_kept_unless_forced(store, tmp_path):
    out = tmp_path / "kept.yaml"
    out.write_text("mine\n")
    done = cli("--store", store["path"], store["KubePodCrashLooping:api"], "-o", str(out))
    assert done.returncode == 2 and "--force" in done.stderr
    assert out.read_text() == "mine\n"
    done = cli("--store", store["path"], store["KubePodCrashLooping:api"], "-o", str(out),
               "--force")  # fmt: skip
    assert done.returncode == 0 and load_scenario(out).method
    done = cli("--store", store["path"], store["KubePodCrashLooping:api"], "-o", str(tmp_path),
               "--force")  # fmt: skip
    assert done.returncode == 2 and "cannot write" in done.stderr
    assert "Traceback" not in done.stderr


def test_stdout_when_no_file_is_given(store, tmp_path):
    done = cli("--store", store["path"], store["KubePodCrashLooping:api"])
    assert done.returncode == 0
    assert done.stdout.startswith("# Regression scenario for incident")
    (tmp_path / "s.yaml").write_text(done.stdout)
    assert load_scenario(tmp_path / "s.yaml").title.startswith("Regression: KubePodCrashLooping")


def test_build_regression_reads_only_the_store(store):
    db = Store(store["path"])
    try:
        regression = build_regression(db, store["KubePodCrashLooping:api"])
    finally:
        db.close()
    assert regression.subject == "workload api"
    assert regression.replay.cause == "crash loop"
