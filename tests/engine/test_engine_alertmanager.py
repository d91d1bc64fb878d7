"""The real sender: Debian's Alertmanager delivers kube-prometheus' KubePodCrashLooping, for a
pod of a Deployment-like workload, to the engine; the crash-loop playbook restarts that pod,
and Alertmanager's resolve notification lands on the same incident's alert trail.

Needs ``prometheus-alertmanager`` (skipped without it, an error when ``CI`` is set: CI
installs it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import urllib.request

import pytest
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import Engine
from pytest_resilience.prometheus.alertmanager import ManagedAlertmanager

# The labels kube-prometheus-stack puts on KubePodCrashLooping (kubernetes-mixin
# alerts/apps_alerts.libsonnet; the kube-state-metrics scrape adds job/service/instance/endpoint),
# as in tests/payloads/alertmanager-0.25-kube-pod-crashlooping-firing.body.
LABELS = {
    "alertname": "KubePodCrashLooping",
    "container": "api",
    "endpoint": "http",
    "instance": "10.244.1.78:8080",
    "job": "kube-state-metrics",
    "namespace": "default",
    "prometheus": "monitoring/kube-prometheus-stack-prometheus",
    "reason": "CrashLoopBackOff",
    "service": "kube-prometheus-stack-kube-state-metrics",
    "severity": "warning",
}


def _need_alertmanager() -> None:
    if shutil.which("prometheus-alertmanager") is None:
        reason = "prometheus-alertmanager not on PATH (Debian package prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)


def _post_alert(am: ManagedAlertmanager, labels: dict, *, ends: bool = False) -> None:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    alert = {
        "labels": labels,
        "annotations": {"summary": "Pod is crash looping."},
        "startsAt": now,
    }
    if ends:
        alert["endsAt"] = now
    request = urllib.request.Request(
        am.url + "/api/v2/alerts",
        data=json.dumps([alert]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def _alert_rows(tmp_path) -> list[tuple[str, str, str]]:
    connection = sqlite3.connect(f"file:{tmp_path / 'e.db'}?mode=ro", uri=True)
    try:
        return connection.execute("SELECT name, target, status FROM alerts").fetchall()
    finally:
        connection.close()


def test_alertmanager_delivers_a_crashloop_the_engine_fixes(tmp_path):
    _need_alertmanager()
    target = ProcTarget({"api": (2, {"v1": SLEEP}, "v1")})
    engine = Engine(
        target,
        playbooks_dir=fast_playbooks(tmp_path / "books"),
        store_path=tmp_path / "e.db",
        listen="127.0.0.1:0",
    ).start()
    try:
        pod = next(p for p in target.pods() if p.workload == "api")
        labels = {**LABELS, "pod": pod.name}
        with ManagedAlertmanager(
            f"{engine.webhook_url}/alerts", group_by=("alertname", "namespace")
        ) as am:
            _post_alert(am, labels)
            incident = wait_for(
                lambda: next((i for i in engine.incidents() if not i.open), None),
                timeout=60,
                what="the crash-loop incident closed",
            )
            assert (incident.alert_name, incident.target, incident.status) == (
                "KubePodCrashLooping",
                "api",
                "resolved",
            )
            assert incident.alert.source == "webhook"
            assert [(a.action, a.detail) for a in engine.actions()] == [
                ("restart_pod", f"replaced pod {pod.name}")
            ]
            _post_alert(am, labels, ends=True)
            # the pod was replaced meanwhile: its name still traces it to its workload
            wait_for(
                lambda: ("KubePodCrashLooping", "api", "resolved") in _alert_rows(tmp_path),
                timeout=60,
                what="Alertmanager's resolve notification, about the same target",
            )
        health = json.load(urllib.request.urlopen(f"{engine.webhook_url}/healthz", timeout=5))
        assert health["rejected"] == 0 and health["accepted"] >= 2
    finally:
        engine.close()
        target.close()
