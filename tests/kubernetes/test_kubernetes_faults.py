"""Fault primitives of the Kubernetes target and their undo from the record alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kube_controllers import NETPOLS, NODES, PODS, EmulatedCluster

from pytest_resilience.errors import FaultError
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.faults import (
    FAULT_ANNOTATION,
    RECORD_ANNOTATION_PREFIX,
    ChangeRecord,
)

NS = "chaos-demo"


def annotations(cluster: EmulatedCluster, name: str) -> dict[str, str]:
    return cluster.obj(PODS, NS, name)["metadata"].get("annotations") or {}


def other_machine(kubeconfig: Path) -> KubernetesTarget:
    """A fresh target, as a cleanup run elsewhere would build it."""
    return KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NS)


def test_network_block_by_ephemeral_container(
    target: KubernetesTarget, cluster: EmulatedCluster, kubeconfig: Path
) -> None:
    pod = target.select("app=api")[0]
    record = target.block_pod_network(pod, ledger_id="L-net-1", ports=[5432], direction="egress")
    obj = cluster.obj(PODS, NS, pod.name)
    (eph,) = obj["spec"]["ephemeralContainers"]
    assert eph["name"] == record.detail["container"]
    assert eph["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    patch = [r for r in cluster.requests() if r.subresource == "ephemeralcontainers"]
    assert len(patch) == 1 and patch[0].method == "PATCH"
    script = cluster.exec_log[-1][3][2]
    assert cluster.exec_log[-1][2] == eph["name"]
    assert "-p tcp --dport 5432 -j DROP" in script
    model = cluster.containers[(NS, pod.name)]
    assert model.hooks == {f"OUTPUT {record.detail['chains']['out']}"}
    assert annotations(cluster, pod.name)[FAULT_ANNOTATION] == "L-net-1"

    data = json.loads(json.dumps(record.to_dict()))  # what the ledger stores
    with other_machine(kubeconfig) as cleaner:
        (found,) = cleaner.find_marked()
        assert found == record
        cleaner.undo(data)
        cleaner.undo(data)  # idempotent
    assert model.hooks == set()
    assert cluster.exec_log[-1][2] == eph["name"]  # reverted in the same container
    assert not any(k.startswith("pytest-resilience/") for k in annotations(cluster, pod.name))


def test_network_block_falls_back_to_networkpolicy(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.refuse_ephemeral = True  # PodSecurity admission forbids NET_ADMIN
    pod = target.select("app=api")[0]
    record = target.block_pod_network(pod, ledger_id="L-net-2")
    assert record.detail["method"] == "networkpolicy"
    policy = cluster.obj(NETPOLS, NS, record.detail["policy"])
    label = record.detail["label"]
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {label: "true"}},
        "policyTypes": ["Ingress", "Egress"],
    }
    assert cluster.obj(PODS, NS, pod.name)["metadata"]["labels"][label] == "true"
    assert [r.ledger_id for r in target.find_marked()] == ["L-net-2"]
    target.undo(record)
    assert cluster.obj(NETPOLS, NS, record.detail["policy"]) is None
    assert label not in cluster.obj(PODS, NS, pod.name)["metadata"]["labels"]
    assert target.find_marked() == []
    target.undo(record)  # idempotent: the policy is already gone


def test_disk_fill_and_undo(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    pod = target.select("app=api")[0]
    record = target.fill_pod_disk(pod, ledger_id="L-disk", path="/var/lib/data/", size_mb=512)
    path = record.detail["file"]
    assert path.startswith("/var/lib/data/.pytest-resilience-fill-")
    assert cluster.containers[(NS, pod.name)].files == {path: 512}
    target.undo(record.to_dict())
    assert cluster.containers[(NS, pod.name)].files == {}


def test_disk_fill_failure_is_a_fault_error_and_leaves_no_mark(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.exec_replies.append(
        (lambda argv: "fallocate" in " ".join(argv), (1, "", "Read-only file system"))
    )
    pod = target.select("app=api")[0]
    with pytest.raises(FaultError, match=r"Read-only file system.*writable mount"):
        target.fill_pod_disk(pod, ledger_id="L-ro", path="/", size_mb=1)
    assert FAULT_ANNOTATION not in annotations(cluster, pod.name)


def test_memory_stress_and_undo(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    pod = target.select("app=api")[1]
    record = target.stress_pod_memory(pod, ledger_id="L-mem", mb=256, duration_s=60)
    argv = cluster.exec_log[-1][3]
    assert "256 << 20" in argv[2] and "python3" in argv[2]
    assert record.detail["pidfile"] in cluster.containers[(NS, pod.name)].files
    target.undo(record)
    assert cluster.containers[(NS, pod.name)].files == {}


def test_node_failure_cordons_drains_and_undo_uncordons(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    busy = target.select("app=api")[0].node  # discovered, never assumed
    assert busy
    record = target.fail_node(busy, ledger_id="L-node")
    node = cluster.obj(NODES, None, busy)
    assert node["spec"]["unschedulable"] is True
    assert node["metadata"]["annotations"][FAULT_ANNOTATION] == "L-node"
    assert len(record.detail["evicted"]) == 1
    target.wait_ready("api", timeout=10)
    assert all(p["spec"]["nodeName"] != busy for p in cluster.pods_of(NS, "api"))
    assert [r.kind for r in target.find_marked()] == ["node_failure"]
    target.undo(record)
    node = cluster.obj(NODES, None, busy)
    assert "unschedulable" not in node["spec"]
    assert not any(k.startswith(RECORD_ANNOTATION_PREFIX) for k in node["metadata"]["annotations"])


def test_undo_after_the_pod_is_gone(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    pod = target.select("app=api")[0]
    record = target.fill_pod_disk(pod, ledger_id="L-gone", path="/data", size_mb=1)
    target.kill_pod(pod)
    target.undo(record)  # nothing left to revert: no error


def test_undo_refuses_a_record_from_another_cluster(target: KubernetesTarget) -> None:
    record = ChangeRecord(kind="disk_fill", ledger_id="x", context="kind-other", objects=())
    with pytest.raises(FaultError, match="--kube-context kind-other"):
        target.undo(record)


def test_bad_record_is_a_clear_error(target: KubernetesTarget) -> None:
    with pytest.raises(FaultError, match="not a change record"):
        target.undo({"kind": "disk_fill"})
