"""Safety rules of the Kubernetes target: refusals happen before any change is sent."""

# ruff: noqa: F401, F811 - pytest fixtures imported from kube_controllers
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from kube_controllers import DEPLOYMENTS, PODS, EmulatedCluster, cluster

from pytest_resilience.errors import ConfigError, NotAllowed, TargetError
from pytest_resilience.targets.base import Pod
from pytest_resilience.targets.kube_api import KubeUnreachable
from pytest_resilience.targets.kube_safety import ChaosPolicy
from pytest_resilience.targets.kubernetes import KubernetesTarget

NS = "chaos-demo"


def make(
    cluster: EmulatedCluster,
    tmp_path: Path,
    *,
    context: str = "kind-test",
    namespace: str = NS,
    **kw,
) -> KubernetesTarget:
    path = cluster.kubeconfig(tmp_path, context=context)
    return KubernetesTarget(kubeconfig=str(path), context=context, namespace=namespace, **kw)


def test_policy_parsing() -> None:
    p = ChaosPolicy.parse(
        ["context:staging-*", "namespace:kube-system,!payments", "!context:kind-prod"]
    )
    assert p.allow_contexts == ("kind-*", "staging-*")
    assert p.allow_namespaces == ("kube-system",) and p.deny_namespaces == ("payments",)
    assert p.deny_contexts == ("kind-prod",)
    assert ChaosPolicy.parse("!ns1").deny_namespaces == ("ns1",)
    with pytest.raises(ConfigError, match=r"--chaos-allow.*bad rule 'cluster:x'"):
        ChaosPolicy.parse(["cluster:x"])


def test_non_kind_context_refused_before_any_request(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    with pytest.raises(NotAllowed, match="--chaos-allow context:prod-eu"):
        make(cluster, tmp_path, context="prod-eu")
    assert cluster.requests() == []
    with make(cluster, tmp_path, context="prod-eu", allow=["context:prod-*"]) as t:
        assert t.context == "prod-eu"


def test_denied_kind_context(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with pytest.raises(NotAllowed, match="denied"):
        make(cluster, tmp_path, allow=["!context:kind-test"])


@pytest.mark.parametrize(
    "ns", ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"]
)
def test_system_namespaces_refused(cluster: EmulatedCluster, tmp_path: Path, ns: str) -> None:
    with pytest.raises(NotAllowed, match=f"--chaos-allow namespace:{ns}"):
        make(cluster, tmp_path, namespace=ns)
    with make(cluster, tmp_path, namespace=ns, allow=[f"namespace:{ns}"]) as t:
        assert t.namespace == ns
    assert cluster.requests() == []


def test_explicitly_denied_namespace(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with pytest.raises(NotAllowed, match="denied"):
        make(cluster, tmp_path, allow=["!chaos-demo"])


def test_changes_in_a_protected_namespace_never_reach_the_server(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    with make(cluster, tmp_path) as t:
        coredns = Pod(name="coredns-abc", workload="coredns", namespace="kube-system")
        with pytest.raises(NotAllowed, match="kube-system"):
            t.kill_pod(coredns)
        with pytest.raises(NotAllowed):
            t.exec(coredns, ["true"])
        with pytest.raises(NotAllowed):
            t.network_block(coredns, ledger_id="l-1")
        with pytest.raises(NotAllowed):
            t.disk_fill(coredns, ledger_id="l-2", path="/data", size_mb=10)
    assert cluster.mutating_requests() == []
    assert cluster.requests() == []


def test_dry_run_logs_and_changes_nothing(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with make(cluster, tmp_path, dry_run=True) as t:
        pod = t.select("app=api")[0]
        t.kill_pod(pod)
        t.scale("api", 7)
        t.restart("api")
        t.cordon("worker-1")
        rec = t.network_block(pod, ledger_id="dry-1")
        assert t.exec(pod, ["rm", "-rf", "/"]).stderr.startswith("dry-run")
        assert rec.dry_run
    assert cluster.mutating_requests() == []
    assert len(t.dry_run_calls) >= 6
    assert any("DELETE pod chaos-demo/" in c for c in t.dry_run_calls)
    assert any("scale replicas=7" in c for c in t.dry_run_calls)
    assert cluster.obj(DEPLOYMENTS, NS, "api")["spec"]["replicas"] == 3
    assert cluster.obj(PODS, NS, pod.name) is not None


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"no kubeconfig at .*kind create cluster"):
        KubernetesTarget(kubeconfig=str(tmp_path / "absent"), namespace=NS)


def test_unknown_context(cluster: EmulatedCluster, tmp_path: Path) -> None:
    path = cluster.kubeconfig(tmp_path)
    with pytest.raises(
        TargetError, match=r"context 'kind-chaos' not found.*known contexts: kind-test"
    ):
        KubernetesTarget(kubeconfig=str(path), context="kind-chaos", namespace=NS)


def test_unreachable_api_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "kind-gone", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "kind-gone",
            }
        )
    )
    with KubernetesTarget(kubeconfig=str(path), namespace=NS) as t:
        t._client.configuration.retries = 0
        with pytest.raises(KubeUnreachable, match="is the cluster up"):
            t.pods("app=api")
