"""Disk fill on Kubernetes is sized against the volume, not the node (issue 11 defect 4).

``df`` inside a pod on an emptyDir shows the node's filesystem: 90 % of it would be 90 % of
the CI runner's disk. The fill is sized against the emptyDir's ``sizeLimit`` (or the PVC's
capacity), with the volume's usage measured by ``du`` (what the kubelet counts against the
limit), and the record says what the kubelet does at the limit: evict the pod.
"""

from __future__ import annotations

from typing import Any

import pytest
from kube_controllers import DEPLOYMENTS, PVCS, EmulatedCluster

from pytest_resilience.errors import FaultError
from pytest_resilience.targets.base import ChangeLog
from pytest_resilience.targets.kubernetes import KubernetesTarget

NS = "chaos-demo"
MOUNT = "/data"
# the node's disk as df shows it from inside the pod: 100 GiB, 10 GiB used
DF_NODE = (
    "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
    f"/dev/vda1 104857600 10485760 94371840 10% {MOUNT}\n"
)


def _deploy(cluster: EmulatedCluster, volume: dict[str, Any], *, mount: str = MOUNT) -> None:
    labels = {"app": "store"}
    cluster.add(
        DEPLOYMENTS,
        NS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "store", "namespace": NS, "uid": "uid-dep-store"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "store",
                                "image": "store:1",
                                "volumeMounts": [{"name": "data", "mountPath": mount}],
                            }
                        ],
                        "volumes": [{"name": "data", **volume}],
                    },
                },
            },
        },
    )
    assert cluster.emu is not None
    cluster.run(cluster.emu._reconcile(NS, "store"))
    cluster.eventually(
        lambda: [p for p in cluster.pods_of(NS, "store") if p["status"].get("phase") == "Running"]
    )
    cluster.exec_replies.append((lambda argv: argv[:2] == ["df", "-Pk"], (0, DF_NODE, "")))
    # du -sk: 256 MiB in the volume
    cluster.exec_replies.append(
        (lambda argv: argv[:2] == ["du", "-sk"], (0, f"262144\t{MOUNT}\n", ""))
    )


def _files(cluster: EmulatedCluster) -> dict[str, int]:
    (pod,) = cluster.pods_of(NS, "store")
    model = cluster.containers.get((NS, pod["metadata"]["name"]))
    return model.files if model else {}


def test_an_emptydir_is_filled_against_its_size_limit_not_the_nodes_disk(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _deploy(cluster, {"emptyDir": {"sizeLimit": "1Gi"}})
    changes = ChangeLog("L-fill")
    target.disk_fill("store", percent=90, path=None, changes=changes)
    (record,) = changes.records
    # 90 % of 1 GiB is 921.6 MiB, 256 MiB are there: 666 MiB more (not 80 GiB of the node)
    assert _files(cluster) == {record.detail["file"]: 666}
    assert record.detail["limit"] == "emptyDir data sizeLimit 1Gi"
    assert "evicts the pod" in record.detail["kubelet"]
    target.undo(record)
    assert _files(cluster) == {}


def test_a_pvc_is_filled_against_its_capacity(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    cluster.add(
        PVCS,
        NS,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "store-data", "namespace": NS},
            "spec": {"resources": {"requests": {"storage": "2Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}},
        },
    )
    _deploy(cluster, {"persistentVolumeClaim": {"claimName": "store-data"}})
    changes = ChangeLog("L-pvc")
    target.disk_fill("store", percent=50, path=None, changes=changes)
    (record,) = changes.records
    assert _files(cluster) == {record.detail["file"]: 1024 - 256}
    assert record.detail["limit"] == "PersistentVolumeClaim store-data capacity 2Gi"
    assert "no space left" in record.detail["kubelet"].lower()


def test_an_emptydir_without_a_size_limit_is_refused(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _deploy(cluster, {"emptyDir": {}})
    changes = ChangeLog("L-nolimit")
    with pytest.raises(FaultError, match=r"emptyDir 'data' has no sizeLimit.*node's disk"):
        target.disk_fill("store", percent=90, path=None, changes=changes)
    assert changes.records == [] and _files(cluster) == {}


def test_a_path_outside_every_volume_is_refused(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _deploy(cluster, {"emptyDir": {"sizeLimit": "1Gi"}})
    changes = ChangeLog("L-root")
    with pytest.raises(FaultError, match=r"/tmp/x is on no volume of pod .*root filesystem"):
        target.disk_fill("store", percent=90, path="/tmp/x", changes=changes)
    assert changes.records == []
