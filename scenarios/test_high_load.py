"""High load: the api scales out under a surge of requests, and latency stays acceptable.

The seed's high-load test, and the Python twin of high_load_autoscaling.yaml. Hypothesis:
with the api under its HorizontalPodAutoscaler (deploy/k8s/autoscaling/api-hpa.yaml: CPU
12m per pod, 3 to 6 replicas), load that goes from a steady 20 requests/s to 100 requests/s,
past what three replicas serve within that target, makes the autoscaler add replicas (its
decision, with the reason, and the new pods' readiness land on the timeline) while the
error rate stays under 2 % and p95 latency under 2 s, wide bounds for a loaded 2-core
machine. The autoscaler is the scenario's own: put on at the start, taken off at the end
with the replicas back where they were, so no other scenario meets extra pods.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_resilience.load_surge import autoscaled, replicas_of, scaled_up
from pytest_resilience.targets.hpa_spec import AutoscalerSpec
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED

# The autoscaler is a capability: Kubernetes' HPA, or the local target's own loop.
pytestmark = pytest.mark.chaos(requires=["autoscaling"])

HPA = Path(__file__).resolve().parents[1] / "deploy" / "k8s" / "autoscaling" / "api-hpa.yaml"
STEADY_RPS = 20
SURGE_RPS = 100
# A local sync is 2 s and the metric window 4 s; a cluster's HPA syncs every 15 s on a
# metrics-server resolution of 15 s, and its new pods pull nothing (kind loads the image).
SCALE_UP_WITHIN_S = 90
ON_NEW_REPLICAS_S = 5  # seconds of surge load served with the new replicas ready


@pytest.fixture
def api_autoscaled(chaos_target) -> Iterator[AutoscalerSpec]:
    """The api under its HPA for this scenario; afterwards none, and its replicas as before."""
    with autoscaled(chaos_target, AutoscalerSpec.from_manifest(HPA)) as spec:
        yield spec


def test_api_scales_out_under_high_load_and_latency_stays_acceptable(
    api_autoscaled, chaos_target, load, slo, timeline
):
    spec = api_autoscaled
    slo.error_rate(below=0.02, window_s=5)
    slo.latency(percentile=95, below_ms=2000, window_s=5)
    start = replicas_of(chaos_target, spec.workload)

    with load(rps=STEADY_RPS) as steady:
        steady.wait_for_samples(3, timeout=30)
        slo.assert_holds()  # steady state first
        # the surge is the scenario's fault (T0 on the timeline)
        surge_at = timeline.mark(FAULT_INJECTED, "load_surge", asked_rps=SURGE_RPS).at
        with load(rps=SURGE_RPS - STEADY_RPS) as surge:
            timeline.wait_for(lambda: scaled_up(timeline, surge_at), timeout=SCALE_UP_WITHIN_S)
            decisions = scaled_up(timeline, surge_at)
            assert decisions, (
                f"no scale-up within {SCALE_UP_WITHIN_S} s of {SURGE_RPS} rps; autoscaler: "
                f"{chaos_target.autoscaler_status(spec.workload)}"
            )
            grown = replicas_of(chaos_target, spec.workload)
            assert start < grown <= spec.max_replicas, (start, grown, decisions)
            chaos_target.wait_ready(spec.workload, timeout=60, replicas=grown)
            served_from = time.time()
            surge.wait_for_samples(len(surge.samples) + ON_NEW_REPLICAS_S, timeout=30)
        timeline.mark(FAULT_REVERTED, "load_surge")
        slo.assert_holds(since=surge_at)  # latency and errors acceptable all through the surge

    scaled = decisions[0]
    timeline.mark(
        "scaled_up",
        spec.workload,
        after_s=round(scaled.at - surge_at, 3),
        replicas=grown,
        ready_after_s=round(served_from - surge_at, 3),
    )
