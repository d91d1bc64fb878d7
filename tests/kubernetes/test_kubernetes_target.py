"""KubernetesTarget against kmock's emulator, through the official client over HTTP."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import pytest
from kube_controllers import DEPLOYMENTS, NODES, PDBS, PODS, REPLICASETS, EmulatedCluster

from pytest_resilience.errors import SelectorMatchedNothing, TargetError
from pytest_resilience.targets.base import EventKind, Target, TargetEvent
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.api import KubeForbidden, KubeNotFound

NS = "chaos-demo"


def test_is_a_target(target: KubernetesTarget) -> None:
    assert isinstance(target, Target)
    assert target.name == "kubernetes" and target.context == "kind-test"


def test_pods_by_selector(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    pods = target.pods("app=api")
    assert len(pods) == 3
    assert all(p.ready and p.workload == "api" and p.namespace == NS for p in pods)
    assert {p.node for p in pods} <= {n["metadata"]["name"] for n in cluster.items(NODES, None)}
    lists = [r for r in cluster.requests() if r.path == f"/api/v1/namespaces/{NS}/pods"]
    assert lists[-1].query["labelSelector"] == "app=api"


def test_select_matching_nothing_is_an_error(target: KubernetesTarget) -> None:
    with pytest.raises(SelectorMatchedNothing, match=r"app=apj.*chaos-demo"):
        target.select("app=apj")


def test_workloads_and_nodes(target: KubernetesTarget) -> None:
    (api,) = target.workloads()
    # the release (the image tag, for a template without DEMO_VERSION), not the revision
    assert (api.name, api.replicas, api.ready_replicas, api.version) == ("api", 3, 3, "v1")
    assert [n.name for n in target.nodes()] == ["worker-1", "worker-2", "worker-3"]


def test_kill_pod_deletes_with_grace_zero_and_a_replacement_gets_ready(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    victim = target.select("app=api")[0]
    target.kill_pod(victim)
    deletes = [r for r in cluster.requests() if r.method == "DELETE"]
    assert deletes[-1].path == f"/api/v1/namespaces/{NS}/pods/{victim.name}"
    assert cluster.obj(PODS, NS, victim.name) is None
    replacement = target.wait_replaced(victim, timeout=10)
    assert replacement.name != victim.name and replacement.ready
    target.wait_ready("api", timeout=10)
    assert cluster.obj(DEPLOYMENTS, NS, "api")["status"]["readyReplicas"] == 3


def test_kill_with_sigterm_execs_kill_in_the_container(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    victim = target.select("app=api")[0]
    events: list[TargetEvent] = []
    died = threading.Event()
    target.subscribe(lambda e: (events.append(e), e.kind == EventKind.POD_DIED and died.set()))
    assert target.wait_watching()
    target.kill_pod(victim, sig=signal.SIGTERM)
    assert cluster.exec_log[-1] == (NS, victim.name, None, ["sh", "-c", "kill -TERM 1"])
    assert died.wait(10)
    dead = [e for e in events if e.kind == EventKind.POD_DIED]
    assert dead[0].pod == victim.name and dead[0].restarts == 1 and dead[0].workload == "api"
    pod = cluster.obj(PODS, NS, victim.name)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1


def test_events_from_watches(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    events: list[TargetEvent] = []
    ready = threading.Event()
    target.subscribe(lambda e: (events.append(e), e.kind == EventKind.POD_READY and ready.set()))
    assert target.wait_watching()
    assert events == []  # the baseline list emits nothing
    victim = target.select("app=api")[1]
    target.kill_pod(victim)
    assert ready.wait(10)
    kinds = [(e.kind, e.pod) for e in events]
    assert (EventKind.POD_DIED, victim.name) in kinds
    assert any(k == EventKind.POD_STARTED for k, _ in kinds)
    # never a polling loop: one list and one watch per resource, however many events
    watches = [r for r in cluster.requests() if r.query.get("watch") == "true"]
    assert len(watches) == 3


@pytest.mark.parametrize("how", ["end", "410"])
def test_watch_restarts_after_expiry_and_gone(
    target: KubernetesTarget, cluster: EmulatedCluster, how: str
) -> None:
    cluster.expire_watches["pods"] = how  # the first pod watch ends at once
    died = threading.Event()
    target.subscribe(lambda e: e.kind == EventKind.POD_DIED and died.set())
    assert target.wait_watching()
    path = f"/api/v1/namespaces/{NS}/pods"
    cluster.eventually(
        lambda: len([r for r in cluster.requests() if r.path == path and r.query.get("watch")]) == 2
    )
    target.kill_pod(target.select("app=api")[0])
    assert died.wait(10)  # the restarted watch delivers
    pod_requests = [
        r for r in cluster.requests() if r.path == path and "labelSelector" not in r.query
    ]
    lists = [r for r in pod_requests if not r.query.get("watch")]
    assert len(lists) == (2 if how == "410" else 1)  # only 410 Gone forces a re-list


def test_node_not_ready_event(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    got = threading.Event()
    seen: list[TargetEvent] = []
    target.subscribe(lambda e: (seen.append(e), e.kind == EventKind.NODE_NOT_READY and got.set()))
    assert target.wait_watching()

    async def node_down() -> None:  # the node lifecycle controller marking a node NotReady
        async with cluster.emu._lock:
            await cluster.emu._patch(
                NODES,
                None,
                "worker-2",
                {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            )

    cluster.run(node_down())
    assert got.wait(10)
    assert [e.node for e in seen if e.kind == EventKind.NODE_NOT_READY] == ["worker-2"]


def test_scale_through_the_subresource(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    target.scale("api", 5)
    req = [r for r in cluster.requests() if r.method == "PATCH"][-1]
    assert req.path == f"/apis/apps/v1/namespaces/{NS}/deployments/api/scale"
    target.wait_ready("api", timeout=10)
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert dep["spec"]["replicas"] == 5 and dep["status"]["readyReplicas"] == 5
    assert len(list(cluster.pods_of(NS, "api"))) == 5


def test_restart_stamps_the_template(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    target.restart("api")
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]
    target.wait_ready("api", timeout=10)
    after = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    assert len(after) == 3 and not (before & after)


def test_rollback_to_previous_revision(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    import kubernetes.client as kc

    apps = kc.AppsV1Api(target.conn.api_client())
    apps.patch_namespaced_deployment(
        "api",
        NS,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "api", "image": "chaos-demo:v2-broken"}]}
                }
            }
        },
    )
    cluster.eventually(
        lambda: (
            cluster.obj(DEPLOYMENTS, NS, "api")["metadata"]["annotations"][
                "deployment.kubernetes.io/revision"
            ]
            == "2"
        )
    )
    assert target.rollback("api") == "v1"  # the release rolled back to (revision 1)
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "chaos-demo:v1"
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"]["labels"]
    target.wait_ready("api", timeout=10)
    assert {p["spec"]["containers"][0]["image"] for p in cluster.pods_of(NS, "api")} == {
        "chaos-demo:v1"
    }
    assert (
        cluster.obj(DEPLOYMENTS, NS, "api")["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        == "3"
    )
    assert len(cluster.items(REPLICASETS, NS)) == 2


def test_rollback_without_history_is_a_clear_error(target: KubernetesTarget) -> None:
    with pytest.raises(TargetError, match="no rollout history found"):
        target.rollback("api")


def test_cordon_uncordon(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    target.cordon("worker-1")
    assert cluster.obj(NODES, None, "worker-1")["spec"]["unschedulable"] is True
    assert not next(n for n in target.nodes() if n.name == "worker-1").schedulable
    target.uncordon("worker-1")
    assert "unschedulable" not in cluster.obj(NODES, None, "worker-1")["spec"]


def test_drain_evicts_through_the_api_and_respects_the_pdb(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.add(
        PDBS,
        NS,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "api"}}},
        },
    )
    api = cluster.obj(DEPLOYMENTS, NS, "api")
    assert api
    target.scale("api", 4)  # 4 pods spread over 3 nodes: one node has two (discovered)
    target.wait_ready("api", timeout=10)
    by_node: dict[str, list[dict]] = {}
    for p in cluster.pods_of(NS, "api"):
        by_node.setdefault(p["spec"]["nodeName"], []).append(p)
    (busy,) = [n for n, pods in by_node.items() if len(pods) == 2]
    on_node = by_node[busy]
    daemon = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "log-agent",
            "namespace": NS,
            "labels": {"app": "log-agent"},
            "ownerReferences": [
                {"kind": "DaemonSet", "name": "log-agent", "apiVersion": "apps/v1"}
            ],
        },
        "spec": {"nodeName": busy},
        "status": {"phase": "Running"},
    }
    cluster.add(PODS, NS, daemon)
    evicted = target.drain(busy, timeout=20)
    assert sorted(p.name for p in evicted) == sorted(p["metadata"]["name"] for p in on_node)
    assert cluster.obj(NODES, None, busy)["spec"]["unschedulable"] is True
    assert cluster.obj(PODS, NS, "log-agent") is not None  # DaemonSet pods stay
    evictions = [r for r in cluster.requests() if r.subresource == "eviction"]
    assert len(evictions) == 2 + cluster.evictions_refused
    assert cluster.evictions_refused >= 1  # the PDB said 429 and drain backed off
    target.wait_ready("api", timeout=10)
    assert all(p["spec"]["nodeName"] != busy for p in cluster.pods_of(NS, "api"))


def test_exec_returns_output_and_exit_code(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.exec_replies.append((lambda argv: argv[:1] == ["cat"], (3, "partial", "no such file")))
    pod = target.select("app=api")[0]
    result = target.exec(pod, ["cat", "/nope"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "partial", "no such file")
    assert target.exec(pod, ["true"]).exit_code == 0


def test_forbidden_answer_names_the_rbac_to_grant(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.forbid("DELETE", "pods")
    pod = target.select("app=api")[0]
    with pytest.raises(
        KubeForbidden, match=r"verb 'delete' on 'pods'.*kubectl create role"
    ) as info:
        target.kill_pod(pod)
    assert info.value.status == 403 and "cannot delete resource" in str(info.value)


def test_missing_objects_are_typed(target: KubernetesTarget) -> None:
    with pytest.raises(KubeNotFound, match="deployments/nope"):
        target.scale("nope", 2)
    with pytest.raises(KubeNotFound):
        target.wait_ready("nope", timeout=1)


def test_wait_ready_timeout_says_what_is_missing(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    with pytest.raises(TargetError, match=r"not ready after 0.3s: ready 3/7"):
        target.wait_ready("api", timeout=0.3, replicas=7)


def test_endpoint_from_service(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    from kube_controllers import SERVICES

    cluster.add(
        SERVICES,
        NS,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30080}]},
        },
    )
    assert target.endpoint("api") == "http://172.18.0.2:30080"


def test_wait_ready_after_killing_a_replacement(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    first = target.select("app=api")[0]
    target.kill_pod(first)
    replacement = target.wait_replaced(first, timeout=10)
    target.kill_pod(replacement)  # a scenario killing "a pod" may well pick the new one
    target.wait_ready("api", timeout=10)  # timed out: it waited for a fresh pod per kill
    ready = [p for p in cluster.pods_of(NS, "api") if p["metadata"]["name"] != replacement.name]
    assert len(ready) == 3


def test_nodes_and_pods_are_discovered_on_kinds_names(tmp_path: Path) -> None:
    """kind names its nodes ``<cluster>-worker``, ``<cluster>-worker2``; ReplicaSet pods end
    in 5 random characters. Nothing here may assume ``node-a`` or a numeric suffix."""
    with EmulatedCluster() as kind:
        kind.seed(nodes=("chaos-worker", "chaos-worker2"))
        t = KubernetesTarget(kubeconfig=str(kind.kubeconfig(tmp_path)), namespace=NS)
        try:
            assert [n.name for n in t.nodes()] == ["chaos-worker", "chaos-worker2"]
            pods = t.select("app=api")
            assert all(re.fullmatch(r"api-[a-z0-9]+-[a-z0-9]{5}", p.name) for p in pods)
            busy = max({p.node for p in pods}, key=lambda n: sum(p.node == n for p in pods))
            assert busy
            record = t.fail_node(busy, ledger_id="L-kind")
            t.wait_ready("api", timeout=10)
            assert {p.node for p in t.select("app=api") if p.ready} == (
                {"chaos-worker", "chaos-worker2"} - {busy}
            )
            t.undo(record)
            assert all(n.schedulable for n in t.nodes())
        finally:
            t.close()
