"""The Kubernetes room's fixtures: kmock's emulated cluster (kube_controllers.py), seeded
with the demo's objects, a kubeconfig for it, a KubernetesTarget on its namespace, and the
official client's CoreV1Api on it.

Tests that need the kubelet's processes as well build a KubeletCluster (kube_kubelet.py)
themselves; what is shared across this room lives here, not in modules tests import.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_controllers import EmulatedCluster

from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.api import connect


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as c:
        c.seed()
        yield c


@pytest.fixture
def kubeconfig(cluster: EmulatedCluster, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path)


@pytest.fixture
def target(kubeconfig: Path) -> Iterator[KubernetesTarget]:
    t = KubernetesTarget(kubeconfig=str(kubeconfig), namespace="chaos-demo")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def core(cluster: EmulatedCluster, tmp_path: Path) -> Iterator[Any]:
    import kubernetes.client as kc

    client = connect(kubeconfig=str(cluster.kubeconfig(tmp_path))).api_client()
    try:
        yield kc.CoreV1Api(client)
    finally:
        client.close()
