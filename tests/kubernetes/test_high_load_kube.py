"""The high-load scenarios, unchanged, on the Kubernetes path: seen from the cluster's side.

Both twins run against the emulator's process kubelet (tests/kubernetes/test_kube_scenarios.py's
cluster: deploy/k8s/'s pods as real processes behind a kube-proxy stand-in), whose labelled
HPA stand-in reads the api pods' real CPU. Besides each scenario's own verdict: the HPA
object existed while they ran and is gone after, new api processes really started for the
scale-up, and the api is back at its three replicas.
"""

# ruff: noqa: F401, F811 - pytest fixtures imported from test_kube_scenarios
from __future__ import annotations

from pathlib import Path

import pytest
from kube_controllers import DEPLOYMENTS, HPAS
from kube_kubelet import KubeletCluster
from test_kube_scenarios import NAMESPACE, kind, run_dir, run_on_kubernetes

SCENARIOS = [
    "scenarios/test_high_load.py::test_api_scales_out_under_high_load_and_latency_stays_acceptable",
    "scenarios/high_load_autoscaling.yaml::high_load_autoscaling",
]


@pytest.mark.soak
@pytest.mark.timeout(600)
def test_high_load_scales_real_api_processes_out_and_back(
    kind: KubeletCluster, run_dir: Path
) -> None:
    kind.wait_all_ready()
    started_before = len(kind.started)
    outcome = run_on_kubernetes(kind, run_dir, *SCENARIOS)
    assert outcome.results == dict.fromkeys(SCENARIOS, "passed"), outcome.output
    assert [d for d in kind.hpa_decisions if d[1] < d[2]], kind.hpa_decisions  # scaled up
    new = [name for name in kind.started[started_before:] if name.startswith("api-")]
    assert len(new) >= 2, new  # each scenario's scale-up started api processes
    assert kind.obj(HPAS, NAMESPACE, "api") is None  # the scenario's autoscaler is gone
    kind.wait_all_ready()
    assert kind.obj(DEPLOYMENTS, NAMESPACE, "api")["spec"]["replicas"] == 3
