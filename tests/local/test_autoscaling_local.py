"""The local target's autoscaler with real processes under real load.

Two replicas of tests/local_services/busy_pod.py, whose requests each spin 5 ms of CPU,
under an HPA spec (AverageValue 40m per pod, 2 to 4 replicas): requests sent from this
process become CPU the autoscaler reads from the pods' cgroups or process trees, and it
adds replicas, announcing each decision as an ``autoscaled`` event. Nothing here waits
on a clock: every wait polls for what the target reports, with a deadline.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_resilience.capabilities import offered
from pytest_resilience.errors import ConfigError
from pytest_resilience.targets.base import EventKind, TargetEvent
from pytest_resilience.targets.hpa_spec import AutoscalerSpec, MetricTarget
from pytest_resilience.targets.local import LocalTarget

HERE = Path(__file__).resolve().parents[1] / "local_services"
SERVICES = """
services:
  - name: busy
    labels: {tier: web}
    replicas: 2
    port: auto
    health: {http: /readyz}
    versions:
      v1: ["{python}", "@HERE@/busy_pod.py", "--port", "{port}", "--work-ms", "5"]
    restart: {policy: always, backoff_s: 0.05, max_backoff_s: 1}
"""
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "busy"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "busy"},
        "minReplicas": 2,
        "maxReplicas": 4,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "AverageValue", "averageValue": "40m"},
                },
            }
        ],
    },
}


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[LocalTarget, list[TargetEvent]]]:
    services = tmp_path / "services.yaml"
    services.write_text(SERVICES.replace("@HERE@", str(HERE)))
    events: list[TargetEvent] = []
    local = LocalTarget.from_file(services, work_dir=tmp_path / "work", timeline_hook=events.append)
    local.start()
    try:
        yield local, events
    finally:
        local.close()


class _Load:
    """Four client threads asking /work back to back until stopped: ~80 % of a core."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    answer.read()
            except OSError:
                pass

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def _replicas(local: LocalTarget) -> int:
    return next(w.replicas for w in local.workloads() if w.name == "busy")


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not done.is_set():
            if predicate():
                return True
            done.wait(0.2)
        return bool(predicate())
    finally:
        deadline.cancel()


def test_the_local_target_offers_autoscaling():
    assert "autoscaling" in offered(LocalTarget)


def test_real_load_makes_the_local_autoscaler_add_replicas_and_say_why(target):
    local, events = target
    spec = AutoscalerSpec.from_object(HPA)
    local.autoscale(spec)
    # before one metric window has passed: no metric, and the status says why
    assert _wait(lambda: (local.autoscaler_status("busy") or spec).problem, 10)
    assert "did not receive metrics" in local.autoscaler_status("busy").problem
    assert _wait(lambda: (local.autoscaler_status("busy") or spec).current_metric, 30)
    assert local.autoscaler_status("busy").problem == ""
    assert _replicas(local) == 2  # idle: within min, nothing to do

    with _Load(local.endpoint("busy") + "/work"):
        assert _wait(lambda: _replicas(local) > 2, 60), local.autoscaler_status("busy")
        local.wait_ready("busy", timeout=30, replicas=_replicas(local))

    decisions = [e for e in events if e.kind == EventKind.AUTOSCALED]
    assert decisions, events
    first = decisions[0]
    assert first.workload == "busy" and first.detail.startswith("2 -> ")
    assert "cpu above target" in first.detail and "target cpu 40m per pod" in first.detail
    assert 2 < int(first.detail.split(":")[0].split(" -> ")[1]) <= 4
    status = local.autoscaler_status("busy")
    assert status is not None and status.last_scale_at == pytest.approx(first.at, abs=5)
    assert len(local.pods("tier=web")) == _replicas(local)

    # taken away, it decides nothing more: a manual scale stays as set
    local.stop_autoscaling("busy")
    assert local.autoscaler_status("busy") is None
    local.scale("busy", 2)
    local.wait_ready("busy", timeout=30, replicas=2)
    with _Load(local.endpoint("busy") + "/work"):
        assert not _wait(lambda: _replicas(local) != 2, 6)  # three sync periods
    assert [e for e in events if e.kind == EventKind.AUTOSCALED] == decisions


def test_a_spec_the_local_target_cannot_follow_names_the_field(target):
    local, _ = target
    spec = AutoscalerSpec.from_object(HPA)
    with pytest.raises(ConfigError) as info:
        local.autoscale(replace(spec, workload="bussy"))
    assert info.value.field == "spec.scaleTargetRef.name" and "busy" in str(info.value)
    with pytest.raises(ConfigError) as info:
        local.autoscale(replace(spec, metric=MetricTarget("cpu", "Utilization", 50)))
    assert info.value.field == "spec.metrics[0].resource.target.type"
    assert "AverageValue" in str(info.value)
    assert local.autoscaler_status("busy") is None
