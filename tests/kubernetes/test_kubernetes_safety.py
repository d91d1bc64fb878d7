"""Safety rules of the Kubernetes target: refusals happen before any change is sent."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_controllers import DEPLOYMENTS, PODS, EmulatedCluster

from pytest_resilience.errors import ConfigError, NotAllowed, TargetError
from pytest_resilience.targets.base import Pod
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.api import KubeUnreachable
from pytest_resilience.targets.kubernetes.safety import ChaosPolicy

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
            t.block_pod_network(coredns, ledger_id="l-1")
        with pytest.raises(NotAllowed):
            t.fill_pod_disk(coredns, ledger_id="l-2", path="/data", size_mb=10)
    assert cluster.mutating_requests() == []
    assert cluster.requests() == []


def test_dry_run_logs_and_changes_nothing(cluster: EmulatedCluster, tmp_path: Path) -> None:
    with make(cluster, tmp_path, dry_run=True) as t:
        pod = t.select("app=api")[0]
        t.kill_pod(pod)
        t.scale("api", 7)
        t.restart("api")
        t.cordon("worker-1")
        rec = t.block_pod_network(pod, ledger_id="dry-1")
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


# -- where the context's API server is (defect 8: the name alone proves nothing) -----------


def _other_address() -> str:
    """This machine's non-loopback IPv4 address: not loopback, not a docker network."""
    import ipaddress

    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            ip = ipaddress.ip_address(a.address) if a.family == socket.AF_INET else None
            if ip and not ip.is_loopback and ip not in ipaddress.ip_network("172.16.0.0/12"):
                return a.address
    pytest.skip("this machine has no address besides loopback and docker's")


@pytest.fixture
def remote_cluster() -> Iterator[EmulatedCluster]:
    """An emulated cluster listening on every address, reached on a non-local one."""
    with EmulatedCluster(host="0.0.0.0") as c:
        c.seed()
        yield c


def test_a_kind_context_on_a_remote_server_is_refused_before_any_request(
    remote_cluster: EmulatedCluster, tmp_path: Path
) -> None:
    port = remote_cluster.url.rsplit(":", 1)[1]
    server = f"http://{_other_address()}:{port}"
    path = remote_cluster.kubeconfig(tmp_path, context="kind-ci", server=server)
    before = len(remote_cluster.requests())
    with pytest.raises(NotAllowed) as info:
        KubernetesTarget(kubeconfig=str(path), namespace=NS)
    message = str(info.value)
    assert server in message and "'kind-ci'" in message
    assert "not on this machine" in message and "--chaos-allow context:kind-ci" in message
    assert len(remote_cluster.requests()) == before  # refused before anything was sent
    with KubernetesTarget(kubeconfig=str(path), namespace=NS, allow=["context:kind-ci"]) as t:
        assert len(t.pods("app=api")) == 3  # allowed explicitly: the same cluster, reachable


def test_every_context_refusal_names_the_api_server(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    with pytest.raises(NotAllowed, match=re.escape(f"(API server {cluster.url})")):
        make(cluster, tmp_path, context="prod-eu")
    with pytest.raises(NotAllowed, match=re.escape(f"(API server {cluster.url})")):
        make(cluster, tmp_path, allow=["!context:kind-test"])
    assert cluster.requests() == []


@pytest.mark.parametrize(
    "server",
    [
        "https://127.0.0.1:41235",
        "https://127.0.0.2:6443",
        "https://[::1]:6443",
        "https://localhost:6443",
        "https://172.18.0.3:6443",  # kind's docker network
        "https://chaos-control-plane:6443",  # kind get kubeconfig --internal
    ],
)
def test_kind_servers_on_this_machine_or_docker_are_allowed(server: str) -> None:
    ChaosPolicy.parse().check_context("kind-chaos", server=server)


@pytest.mark.parametrize(
    "server", ["https://10.20.0.5:6443", "https://api.kind.example.com", "https://192.0.2.9"]
)
def test_kind_servers_elsewhere_are_refused_unless_allowed(server: str) -> None:
    with pytest.raises(NotAllowed, match=re.escape(server)):
        ChaosPolicy.parse().check_context("kind-chaos", server=server)
    ChaosPolicy.parse(["context:kind-chaos"]).check_context("kind-chaos", server=server)
    ChaosPolicy.parse(["context:kind-*"]).check_context("kind-chaos", server=server)


def test_the_run_header_shows_context_server_and_namespace(
    cluster: EmulatedCluster, tmp_path: Path
) -> None:
    path = cluster.kubeconfig(tmp_path)
    (tmp_path / "test_x.py").write_text("def test_nothing():\n    pass\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--chaos-target=kubernetes",
            "--kube-context=kind-test",
            f"--chaos-namespace={NS}",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_x.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "KUBECONFIG": str(path)},
    )
    assert (
        f"chaos target: kubernetes, context 'kind-test', API server {cluster.url}, "
        f"namespace '{NS}'" in proc.stdout
    ), proc.stdout + proc.stderr
    assert cluster.requests() == []  # the header resolves the kubeconfig, sends nothing
