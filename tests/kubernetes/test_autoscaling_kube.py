"""The Kubernetes target's autoscaling against the emulator and its labelled HPA stand-in.

``autoscale(spec)`` must create a real autoscaling/v2 HorizontalPodAutoscaler (what the
cluster's controller acts on); the emulator's stand-in for metrics-server and the HPA
controller (kube_controllers.py ``_hpa_controller``) scales the Deployment on the
pods' CPU set here and records it in the HPA's status, and the target turns that rescale
into an ``autoscaled`` event from its watch of the namespace's HPAs.
"""

from __future__ import annotations

import threading

from kube_controllers import HPAS, PODS, EmulatedCluster

from pytest_resilience.capabilities import offered
from pytest_resilience.targets.base import EventKind, TargetEvent
from pytest_resilience.targets.hpa_spec import AutoscalerSpec
from pytest_resilience.targets.kubernetes import KubernetesTarget

NS = "chaos-demo"
DEMO_HPA = "deploy/k8s/autoscaling/api-hpa.yaml"


def test_the_kubernetes_target_offers_autoscaling() -> None:
    assert "autoscaling" in offered(KubernetesTarget)


def _api_pods(cluster: EmulatedCluster) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in cluster.items(PODS, NS)
        if p["metadata"].get("labels", {}).get("app") == "api"
        and not p["metadata"].get("deletionTimestamp")
    ]


def test_autoscale_creates_the_hpa_the_controller_scales_by_and_its_rescale_is_an_event(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    events: list[TargetEvent] = []
    scaled = threading.Event()

    def seen(event: TargetEvent) -> None:
        events.append(event)
        if event.kind == EventKind.AUTOSCALED:
            scaled.set()

    target.subscribe(seen)
    spec = AutoscalerSpec.from_manifest(DEMO_HPA)
    target.autoscale(spec)
    hpa = cluster.obj(HPAS, NS, "api")
    assert hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "api"
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "AverageValue",
        "averageValue": "12m",
    }
    assert hpa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "pytest-resilience"

    # no metrics yet: the HPA says it cannot compute a replica count, and why
    done = threading.Event()
    assert not done.wait(5 * cluster.hpa_sync_s)
    status = target.autoscaler_status("api")
    assert status is not None and "did not receive metrics" in status.problem

    # idle pods (2m each): within minReplicas, no rescale
    for pod in _api_pods(cluster):
        cluster.pod_cpu_m[(NS, pod)] = 2
    assert not done.wait(20 * cluster.hpa_sync_s) and not scaled.is_set()
    status = target.autoscaler_status("api")
    assert status is not None and (status.current_replicas, status.desired_replicas) == (3, 3)
    assert (status.current_metric, status.problem) == ("2m per pod", "")

    # 40m each, ratio 3.33: ceil(3 x 3.33) = 10, limited by the policy (2 pods per 15 s)
    for pod in _api_pods(cluster):
        cluster.pod_cpu_m[(NS, pod)] = 40
    assert scaled.wait(10), events
    decision = next(e for e in events if e.kind == EventKind.AUTOSCALED)
    assert decision.workload == "api"
    assert decision.detail == "3 -> 5: cpu above target (40m per pod, target cpu 12m per pod)"
    assert cluster.hpa_decisions[0] == ("api", 3, 5)
    target.wait_ready("api", timeout=10, replicas=5)
    assert len(_api_pods(cluster)) >= 5  # 6 once the policy period allows
    status = target.autoscaler_status("api")
    assert status is not None and status.last_scale_at is not None

    # a second autoscale replaces the spec; stop_autoscaling deletes it
    target.autoscale(spec)
    target.stop_autoscaling("api")
    assert cluster.obj(HPAS, NS, "api") is None
    assert target.autoscaler_status("api") is None
    target.stop_autoscaling("api")  # none left: nothing to do
