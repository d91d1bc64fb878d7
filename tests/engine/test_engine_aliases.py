"""Real alert names reach the bundled playbooks, and their labels find the real target.

The names and labels are those of the public rule sets clusters run:
github.com/kubernetes-monitoring/kubernetes-mixin alerts/{apps_alerts,kubelet}.libsonnet
(kube-prometheus-stack), github.com/prometheus/node_exporter docs/node-mixin/alerts,
github.com/prometheus-community/postgres_exporter postgres_mixin/alerts/postgres.libsonnet,
github.com/oliver006/redis_exporter contrib/redis-mixin/alerts/redis.libsonnet and
github.com/samber/awesome-prometheus-alerts dist/rules (kubestate, cadvisor, postgres, redis).
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Engine, load_playbook, load_playbooks
from pytest_resilience.engine.alerts import Alert
from pytest_resilience.engine.escalation import PagerDuty, pagerduty_severity
from pytest_resilience.engine.store import Incident
from pytest_resilience.engine.targeting import NoTarget, TargetLabel, find_target
from pytest_resilience.errors import ConfigError

PAYLOADS = Path(__file__).parents[1] / "payloads"

# (alert name as the rule set spells it, the playbook it must reach, its name there)
REAL_NAMES = [
    ("KubePodCrashLooping", "Pod Crash Loop", "PodCrashLoop"),
    ("KubePodNotReady", "Pod Crash Loop", "PodCrashLoop"),
    ("KubeDeploymentReplicasMismatch", "Pod Crash Loop", "PodCrashLoop"),
    ("KubernetesPodCrashLooping", "Pod Crash Loop", "PodCrashLoop"),
    ("KubeDeploymentRolloutStuck", "High Error Rate", "DeploymentFailure"),
    ("KubeNodeNotReady", "Node Not Ready", "NodeNotReady"),
    ("KubeNodeUnreachable", "Node Not Ready", "NodeNotReady"),
    ("KubernetesNodeNotReady", "Node Not Ready", "NodeNotReady"),
    ("ContainerHighMemoryUsage", "Resource Exhaustion", "HighMemoryUsage"),
    ("KubernetesContainerOomKiller", "Resource Exhaustion", "HighMemoryUsage"),
    ("PostgreSQLMaxConnectionsReached", "Resource Exhaustion", "DatabaseConnectionPoolExhaustion"),
    ("PostgreSQLHighConnections", "Resource Exhaustion", "DatabaseConnectionPoolExhaustion"),
    ("PostgresqlTooManyConnections", "Resource Exhaustion", "DatabaseConnectionPoolExhaustion"),
    ("RedisTooManyConnections", "Resource Exhaustion", "DatabaseConnectionPoolExhaustion"),
    ("PostgreSQLCacheHitRatio", "Resource Exhaustion", "CacheHitRatioDegraded"),
    ("RedisOutOfMemory", "Resource Exhaustion", "RedisOutOfMemory"),
    ("NodeFilesystemAlmostOutOfSpace", "Node Disk Filling", "NodeFilesystemAlmostOutOfSpace"),
    ("NodeFilesystemSpaceFillingUp", "Node Disk Filling", "NodeFilesystemSpaceFillingUp"),
    ("NodeFilesystemAlmostOutOfFiles", "Node Disk Filling", "NodeFilesystemAlmostOutOfFiles"),
]


@pytest.mark.parametrize(("alert", "playbook", "known_as"), REAL_NAMES)
def test_real_alert_names_route_to_a_bundled_playbook(alert, playbook, known_as):
    books = {name: b for b in load_playbooks(BUNDLED_PLAYBOOKS) for name in b.alerts}
    assert alert in books, f"{alert} reaches no bundled playbook"
    book = books[alert]
    assert book.name == playbook
    assert book.known_as(alert) == known_as
    # the first step has an option for it: an alias never falls through to "nothing to do"
    first = book.steps[0]
    probe = Alert(alert, "x", severity="critical", labels={"severity": "critical"})
    assert first.choose(probe, known_as=book.known_as(alert)) is not None


@pytest.fixture
def target():
    t = ProcTarget({"api": (2, {"v1": SLEEP}, "v1"), "postgres": (1, {"v1": SLEEP}, "v1")})
    yield t
    t.close()


def _labels(**labels):
    return Alert("KubePodCrashLooping", "exporter", labels=labels)


def test_pod_label_finds_its_workload_and_never_the_exporter(target):
    pod = next(p for p in target.pods() if p.workload == "api")
    alert = _labels(
        namespace="default", pod=pod.name, job="kube-state-metrics",
        service="kube-prometheus-stack-kube-state-metrics", instance="10.244.1.78:8080",
    )  # fmt: skip
    found = find_target(alert, [TargetLabel.inferred("pod")], target)
    assert (found.name, found.kind) == ("api", "workload")


def test_a_gone_deployment_pod_is_traced_by_its_name(target):
    alert = _labels(namespace="default", pod="api-7d9f8b6c5d-xk2mn")
    assert find_target(alert, [TargetLabel.inferred("pod")], target).name == "api"


def test_another_namespace_is_no_target(target):
    pod = next(p for p in target.pods() if p.workload == "api")
    alert = _labels(namespace="kube-system", pod=pod.name)
    with pytest.raises(NoTarget) as info:
        find_target(alert, [TargetLabel.inferred("pod")], target)
    assert f"pod={pod.name!r} in namespace 'kube-system' is no pod" in str(info.value)


def test_instance_names_a_node_or_a_workload_by_its_host(target):
    node = Alert("NodeFilesystemAlmostOutOfSpace", "x", labels={"instance": "node-a:9100"})
    found = find_target(
        node, [TargetLabel.inferred("node"), TargetLabel.inferred("instance")], target
    )
    assert (found.name, found.kind) == ("node-a", "node")
    db = Alert("PostgreSQLMaxConnectionsReached", "x", labels={"instance": "postgres:9187"})
    assert find_target(db, [TargetLabel.inferred("instance")], target).name == "postgres"


def test_replicas_mismatch_acts_on_the_deployment_not_on_kube_state_metrics_pod(target):
    """kube-prometheus' KubeDeploymentReplicasMismatch has `pod` = kube-state-metrics' pod."""
    book = next(b for b in load_playbooks(BUNDLED_PLAYBOOKS) if b.name == "Pod Crash Loop")
    alias = book.aliases["KubeDeploymentReplicasMismatch"]
    alert = Alert(
        "KubeDeploymentReplicasMismatch", "x",
        labels={"deployment": "api", "namespace": "default", "pod": "api-1",
                "container": "kube-state-metrics"},
    )  # fmt: skip
    assert find_target(alert, alias.target, target).via == "label deployment='api'"


def _write(tmp_path, text):
    path = tmp_path / "book.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("alerts", "field", "words"),
    [
        ("[Demo, {alert: X, as: Nope, target: [pod]}]", "alerts[1].as", "own alerts ['Demo']"),
        ("[Demo, {alert: X, target: []}]", "alerts[1].target", "an alias needs 'target'"),
        ("[Demo, {alert: X, target: [{label: a, kind: rack}]}]", "alerts[1].target[0].kind",
         "expected one of"),
        ("[Demo, {alert: X, tagret: [pod]}]", "alerts[1].tagret", "unknown field"),
        ("[Demo, Demo]", "alerts[1]", "listed twice"),
    ],
)  # fmt: skip
def test_alias_mistakes_name_file_line_field(tmp_path, alerts, field, words):
    path = _write(
        tmp_path,
        f"playbook: Demo\nalerts: {alerts}\nsteps:\n  - name: one\n    actions: [rollback]\n",
    )
    with pytest.raises(ConfigError) as info:
        load_playbook(path)
    assert info.value.field == field and words in str(info.value)
    assert f"{path}:2" in str(info.value)


def _crashloop_body(pod: str, namespace: str, status: str = "firing") -> bytes:
    """The real Alertmanager 0.25 delivery, about one of this test's pods."""
    name = f"alertmanager-0.25-kube-pod-crashlooping-{status}.body"
    text = "\n".join(
        line for line in (PAYLOADS / name).read_text().splitlines() if not line.startswith("#")
    )
    body = json.loads(text)
    for where in (body["alerts"][0]["labels"], body["commonLabels"]):
        where.update(pod=pod, namespace=namespace)
    return json.dumps(body).encode()


@pytest.fixture
def engine(target, tmp_path):
    e = Engine(
        target,
        playbooks_dir=fast_playbooks(tmp_path / "books"),
        store_path=tmp_path / "e.db",
        listen="127.0.0.1:0",
    ).start()
    yield e
    e.close()


def _post(engine, body: bytes):
    return requests.post(
        f"{engine.webhook_url}/alerts",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def test_kube_prometheus_crashloop_payload_drives_the_crash_loop_playbook(engine, target):
    pod = next(p for p in target.pods() if p.workload == "api")
    assert _post(engine, _crashloop_body(pod.name, "default")).status_code == 200
    incident = wait_for(
        lambda: next((i for i in engine.incidents() if not i.open), None), what="incident closed"
    )
    assert (incident.alert_name, incident.target, incident.playbook, incident.status) == (
        "KubePodCrashLooping",
        "api",
        "Pod Crash Loop",
        "resolved",
    )
    (restart,) = [a for a in engine.actions() if a.incident_id == incident.id]
    assert (restart.action, restart.result) == ("restart_pod", "ok")
    assert restart.detail == f"replaced pod {pod.name}"
    assert pod.name not in {p.name for p in target.pods()}
    assert _post(engine, _crashloop_body(pod.name, "default", "resolved")).status_code == 200


def test_alert_naming_no_target_opens_an_incident_saying_so(engine, target):
    body = (PAYLOADS / "kube-pod-crashlooping-bridge-test.body").read_text()
    body = "\n".join(line for line in body.splitlines() if not line.startswith("#"))
    before = {p.name for p in target.pods()}
    assert _post(engine, body.encode()).status_code == 200
    (incident,) = wait_for(engine.incidents, what="an incident")
    assert (incident.target, incident.status, incident.severity) == (
        "busybox-crash-test",
        "escalated",
        "warning",
    )
    assert "names no target the engine can act on" in incident.reason
    assert "pod='busybox-crash-test' in namespace 'test-pods' is no pod" in incident.reason
    notes = [n for n in engine.store.notes(incident.id) if n.kind == "no_target"]
    assert notes and notes[0].message.endswith("nothing was done")
    assert engine.actions() == [] and {p.name for p in target.pods()} == before


def test_warning_disk_alert_pages_without_acting(engine):
    engine.submit(
        Alert(
            "NodeFilesystemAlmostOutOfSpace", "node-a",
            labels={"instance": "node-a:9100", "mountpoint": "/", "severity": "warning"},
            severity="warning", source="webhook",
        )
    )  # fmt: skip
    (incident,) = wait_for(engine.incidents, what="an incident")
    wait_for(lambda: not engine.store.incident(incident.id).open, what="incident decided")
    incident = engine.store.incident(incident.id)
    assert (incident.target, incident.status) == ("node-a", "escalated")
    assert "no step of playbook 'Node Disk Filling' applies" in incident.reason
    assert engine.actions() == []


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("critical", "critical"), ("page", "critical"), ("P1", "critical"),
        ("major", "error"), ("Warning", "warning"), ("minor", "warning"), ("", "warning"),
        ("none", "info"), ("informational", "info"), ("bogus", "error"),
    ],
)  # fmt: skip
def test_severity_labels_map_onto_pagerdutys_four(monkeypatch, label, expected):
    assert pagerduty_severity(label) == expected
    monkeypatch.setenv("PAGERDUTY_ROUTING_KEY", "k" * 32)
    alert = Alert("X", "api", severity=label)
    incident = Incident(
        id="inc-1", alert_name="X", target="api", fingerprint="", playbook="", status="escalated",
        step=0, severity=label, summary="s", reason="r", alert=alert, follow_up=(), dry_run=False,
        opened_at=0.0, detected_at=0.0, updated_at=0.0, closed_at=None,
    )  # fmt: skip
    body = PagerDuty().payload(incident, "trigger")
    assert body["payload"]["severity"] == expected
    assert body["payload"]["custom_details"]["severity_label"] == label


class _CountingTarget(ProcTarget):
    """The platform double, counting the listings asked of it (API calls on Kubernetes)."""

    listings: ClassVar[Counter] = Counter()

    def pods(self, *args, **kwargs):
        if not getattr(self, "_inside", False):
            self.listings["pods"] += 1
        return super().pods(*args, **kwargs)

    def workloads(self):
        self.listings["workloads"] += 1
        self._inside = True  # its own pods() call is part of this listing
        try:
            return super().workloads()
        finally:
            self._inside = False


def test_an_alert_storm_lists_the_target_once_per_batch(tmp_path):
    target = _CountingTarget({"api": (1, {"v1": SLEEP}, "v1")})
    engine = Engine(
        target, playbooks_dir=fast_playbooks(tmp_path / "books"), store_path=tmp_path / "e.db"
    )
    try:
        for n in range(100):  # queued before the dispatcher runs: one batch
            labels = {"alertname": "KubePodCrashLooping", "namespace": "default", "pod": f"x-{n}"}
            engine.submit(Alert("KubePodCrashLooping", "x", labels=labels, fingerprint=f"f{n}"))
        _CountingTarget.listings.clear()
        engine.start()
        wait_for(lambda: len(engine.incidents()) == 100, what="100 no-target incidents")
        assert _CountingTarget.listings == {"pods": 1, "workloads": 1}
        assert {i.status for i in engine.incidents()} == {"escalated"}
    finally:
        engine.close()
        target.close()
