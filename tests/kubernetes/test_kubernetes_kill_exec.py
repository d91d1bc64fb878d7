"""Signals and exec on the Kubernetes target against slim images, and the network block's
fallback when the node cannot pull its image (issue 11 defects 3, 5 and 7)."""

from __future__ import annotations

import signal

import pytest
from kube_controllers import DEMO_IMAGE_BINARIES, NETPOLS, PODS, EmulatedCluster

from pytest_resilience.errors import TargetError
from pytest_resilience.targets.base import ChangeLog
from pytest_resilience.targets.kubernetes import KubernetesTarget

NS = "chaos-demo"


@pytest.fixture
def slim(cluster: EmulatedCluster) -> EmulatedCluster:
    """The api image as python:3.11-slim ships it: sh, python, no kill, no ps."""
    cluster.image_binaries["chaos-demo:v1"] = DEMO_IMAGE_BINARIES
    return cluster


def _restarts(cluster: EmulatedCluster, name: str) -> int:
    pod = cluster.obj(PODS, NS, name) or {}
    return int((pod.get("status", {}).get("containerStatuses") or [{}])[0].get("restartCount", 0))


def _share_process_namespace(cluster: EmulatedCluster, name: str) -> None:
    """The pod runs its app under an init (spec.shareProcessNamespace: the pause process
    is PID 1), set in the store as the template would have."""

    async def put() -> None:
        assert cluster.emu is not None
        async with cluster.emu._lock:
            await cluster.emu._patch(PODS, NS, name, {"spec": {"shareProcessNamespace": True}})

    cluster.run(put())


def test_exec_of_a_binary_the_image_lacks_keeps_the_api_servers_message(
    target: KubernetesTarget, slim: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    result = target.exec(pod, ["ps", "-e"])
    assert result.exit_code == 127
    assert 'exec: "ps": executable file not found in $PATH' in result.stderr


def test_sigterm_on_a_slim_image_uses_the_shell_builtin(
    target: KubernetesTarget, slim: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    target.kill_pod(pod, sig=signal.SIGTERM)
    assert slim.exec_log[-1] == (NS, pod.name, None, ["sh", "-c", "kill -TERM 1"])
    slim.eventually(lambda: _restarts(slim, pod.name) == 1)


def test_sigkill_by_exec_kills_the_app_under_an_init_and_the_pod_stays(
    target: KubernetesTarget, slim: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    _share_process_namespace(slim, pod.name)
    target.kill_pod(pod, sig=signal.SIGKILL, by_exec=True)
    assert slim.exec_log[-1] == (NS, pod.name, None, ["sh", "-c", "kill -KILL -1"])
    assert not [r for r in slim.requests() if r.method == "DELETE"]
    slim.eventually(lambda: _restarts(slim, pod.name) == 1)


def test_sigkill_by_exec_with_the_app_as_pid_1_says_why_it_cannot(
    target: KubernetesTarget, slim: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    with pytest.raises(TargetError, match=r"PID 1 never gets SIGKILL.*init.*by_exec=False"):
        target.kill_pod(pod, sig=signal.SIGKILL, by_exec=True)


def test_sigkill_by_default_is_a_delete_with_grace_zero(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    pod = target.select("app=api")[0]
    target.kill_pod(pod)
    (delete,) = [r for r in cluster.requests() if r.method == "DELETE"]
    assert delete.query["gracePeriodSeconds"] == "0"


def test_an_unpullable_network_image_falls_back_to_networkpolicy_at_once(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    """ErrImagePull/ImagePullBackOff is not waited out: the block falls back to a
    NetworkPolicy, whose record says it only cuts new connections."""
    cluster.unpullable_images.add(target.net_image)
    pod = target.select("app=api")[0]
    changes = ChangeLog("L-pull")
    record = target.block_pod_network(pod, ledger_id="L-pull", timeout=5, changes=changes)
    assert record.detail["method"] == "networkpolicy"
    assert "ErrImagePull" in record.detail["why"] or "ImagePullBackOff" in record.detail["why"]
    assert "only cuts new connections" in record.detail["limits"]
    assert changes.records == [record]  # the ephemeral record was dropped
    assert cluster.obj(NETPOLS, NS, record.detail["policy"]) is not None
    assert [r.detail["method"] for r in target.find_marked()] == ["networkpolicy"]
    target.undo(record)
    assert cluster.obj(NETPOLS, NS, record.detail["policy"]) is None
    assert target.find_marked() == []
