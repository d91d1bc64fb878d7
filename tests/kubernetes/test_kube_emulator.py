"""The emulated cluster behaves like the real components it stands for.

kube_controllers.py and kube_apiserver.py are the yardstick every Kubernetes
test is measured with, so they are tested too: against what kube-apiserver, the
Deployment/ReplicaSet controllers and the kubelet do (the source files are named in those
modules). Each check here failed against the earlier emulator (numeric pod suffixes,
``resourceVersion: "..."``, selectors ignored, pods vanishing without Terminating, Ready
at once, Recreate-style rollouts, every exec succeeding, every image pulled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_controllers import DEPLOYMENTS, PODS, REPLICASETS, EmulatedCluster

NS = "chaos-demo"
SUFFIX = r"[bcdfghjklmnpqrstvwxz2456789]"


@pytest.fixture
def core(cluster: EmulatedCluster, tmp_path: Path) -> Iterator[Any]:
    import kubernetes.client as kc

    from pytest_resilience.targets.kubernetes.api import connect

    client = connect(kubeconfig=str(cluster.kubeconfig(tmp_path))).api_client()
    try:
        yield kc.CoreV1Api(client), kc.AppsV1Api(client)
    finally:
        client.close()


def raw(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return json.loads(fn(*args, _preload_content=False, **kwargs).data)


def pod_events(cluster: EmulatedCluster, app: str = "api") -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.obj)
        for e in cluster.history.events
        if e.resource == PODS and e.obj["metadata"].get("labels", {}).get("app") == app
    ]


def test_pod_names_are_generated_like_the_replicaset_controllers(
    cluster: EmulatedCluster,
) -> None:
    (rs,) = cluster.items(REPLICASETS, NS)
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert re.fullmatch(rf"{SUFFIX}{{6,10}}", h)  # SafeEncodeString of an fnv32a
    assert rs["metadata"]["name"] == f"api-{h}"
    names = [p["metadata"]["name"] for p in cluster.pods_of(NS, "api")]
    assert len(names) == 3
    assert all(re.fullmatch(rf"api-{h}-{SUFFIX}{{5}}", n) for n in names), names
    assert all(p["metadata"]["generateName"] == f"api-{h}-" for p in cluster.pods_of(NS, "api"))


def test_resource_versions_are_numeric_and_grow(cluster: EmulatedCluster, core: Any) -> None:
    v1, _ = core
    listed = raw(v1.list_namespaced_pod, NS)
    list_rv = int(listed["metadata"]["resourceVersion"])
    item_rvs = [int(p["metadata"]["resourceVersion"]) for p in listed["items"]]
    assert item_rvs and max(item_rvs) <= list_rv
    name = listed["items"][0]["metadata"]["name"]
    v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"touched": "yes"}}})
    assert int(raw(v1.read_namespaced_pod, name, NS)["metadata"]["resourceVersion"]) > list_rv


def test_a_watch_from_a_compacted_version_gets_410(cluster: EmulatedCluster, core: Any) -> None:
    v1, _ = core
    old = raw(v1.list_namespaced_pod, NS)["metadata"]["resourceVersion"]
    name = cluster.items(PODS, NS)[0]["metadata"]["name"]
    v1.patch_namespaced_pod(name, NS, {"metadata": {"labels": {"x": "1"}}})
    cluster.compact()
    resp = v1.list_namespaced_pod(
        NS, watch=True, resource_version=old, timeout_seconds=5, _preload_content=False
    )
    (line, *_) = [ln for ln in resp.data.decode().splitlines() if ln.strip()]
    event = json.loads(line)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert "too old resource version" in event["object"]["message"]


def test_a_watch_ends_at_its_timeout_with_a_bookmark_first(
    cluster: EmulatedCluster, core: Any
) -> None:
    v1, _ = core
    rv = raw(v1.list_namespaced_pod, NS)["metadata"]["resourceVersion"]
    resp = v1.list_namespaced_pod(
        NS,
        watch=True,
        resource_version=rv,
        timeout_seconds=1,
        allow_watch_bookmarks=True,
        _preload_content=False,
    )
    events = [json.loads(ln) for ln in resp.data.decode().splitlines() if ln.strip()]
    assert events and events[-1]["type"] == "BOOKMARK"  # the one right before the deadline
    assert set(events[-1]["object"]["metadata"]) == {"resourceVersion"}
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    plain = v1.list_namespaced_pod(
        NS, watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
    )
    assert not [ln for ln in plain.data.decode().splitlines() if "BOOKMARK" in ln]


def test_selectors_are_honoured_by_the_server(cluster: EmulatedCluster, core: Any) -> None:
    v1, _ = core
    cluster.add(
        PODS,
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "other", "namespace": NS, "labels": {"app": "other"}},
            "spec": {"nodeName": "worker-1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        },
    )

    def names(**kw: Any) -> set[str]:
        return {p["metadata"]["name"] for p in raw(v1.list_namespaced_pod, NS, **kw)["items"]}

    api = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    assert names(label_selector="app=api") == api
    assert names(label_selector="app!=api") == {"other"}
    assert names(label_selector="app in (api, other)") == api | {"other"}
    assert names(label_selector="app notin (api)") == {"other"}
    assert names(label_selector="!app") == set()
    assert names(field_selector="metadata.name=other") == {"other"}
    on_1 = {p["metadata"]["name"] for p in cluster.items(PODS, NS)}
    on_1 = {n for n in on_1 if cluster.obj(PODS, NS, n)["spec"]["nodeName"] == "worker-1"}
    assert names(field_selector="spec.nodeName=worker-1") == on_1
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as info:
        v1.list_namespaced_pod(NS, field_selector="spec.image=x")
    assert info.value.status == 400 and "field label not supported" in info.value.body


def test_eviction_and_default_delete_go_through_terminating(
    cluster: EmulatedCluster, core: Any
) -> None:
    v1, _ = core
    evicted, deleted, killed = (p["metadata"]["name"] for p in cluster.pods_of(NS, "api"))
    v1.create_namespaced_pod_eviction(
        evicted, NS, {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": evicted}}
    )
    v1.delete_namespaced_pod(deleted, NS)
    v1.delete_namespaced_pod(killed, NS, grace_period_seconds=0)
    cluster.eventually(
        lambda: not {evicted, deleted} & {p["metadata"]["name"] for p in cluster.items(PODS, NS)}
    )
    for name in (evicted, deleted):
        seen = [(t, o) for t, o in pod_events(cluster) if o["metadata"]["name"] == name]
        terminating = [i for i, (t, o) in enumerate(seen) if o["metadata"].get("deletionTimestamp")]
        gone = [i for i, (t, _) in enumerate(seen) if t == "DELETED"]
        assert terminating and gone and terminating[0] < gone[0], name
        assert seen[terminating[0]][1]["metadata"]["deletionGracePeriodSeconds"] == 10
    seen = [(t, o) for t, o in pod_events(cluster) if o["metadata"]["name"] == killed]
    assert seen[-1][0] == "DELETED"  # grace 0: removed at once, no Terminating first
    assert not any(o["metadata"].get("deletionTimestamp") for _, o in seen)


def test_a_new_pod_is_ready_only_after_its_readiness_probe_period(
    cluster: EmulatedCluster, core: Any
) -> None:
    v1, _ = core
    victim = next(cluster.pods_of(NS, "api"))["metadata"]["name"]
    v1.delete_namespaced_pod(victim, NS, grace_period_seconds=0)
    cluster.eventually(lambda: len([p for p in cluster.pods_of(NS, "api") if _ready(p)]) == 3)
    names = [
        o["metadata"]["name"]
        for t, o in pod_events(cluster)
        if t == "ADDED" and o["metadata"]["name"] != victim
    ]
    newest = names[-1]
    states = [
        (o.get("status", {}).get("phase"), _ready(o))
        for _, o in pod_events(cluster)
        if o["metadata"]["name"] == newest
    ]
    assert ("Running", False) in states  # running, probe not yet passed
    assert states.index(("Running", False)) < states.index(("Running", True))


def _ready(p: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in p.get("status", {}).get("conditions", [])
    )


def test_a_rolling_update_surges_by_one_and_keeps_every_replica_available(
    cluster: EmulatedCluster, core: Any
) -> None:
    _, apps = core
    start = cluster.history.rv
    apps.patch_namespaced_deployment(
        "api",
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": "chaos-demo:v2"}]}}
            }
        },
    )

    def done() -> bool:
        pods = list(cluster.pods_of(NS, "api", terminating=True))
        return len(pods) == 3 and all(
            p["spec"]["containers"][0]["image"] == "chaos-demo:v2" and _ready(p) for p in pods
        )

    cluster.eventually(done, timeout=20)
    # replay the pod history of the rollout: never more than 3+1 pods, never under 3 Ready
    state: dict[str, dict[str, Any]] = {}
    for e in cluster.history.events:
        if e.resource != PODS or e.obj["metadata"].get("labels", {}).get("app") != "api":
            continue
        if e.type == "DELETED":
            state.pop(e.obj["metadata"]["name"], None)
        else:
            state[e.obj["metadata"]["name"]] = e.obj
        if e.rv <= start:
            continue
        live = [p for p in state.values() if not p["metadata"].get("deletionTimestamp")]
        assert len(live) <= 4, f"more than maxSurge=1 extra pods at rv {e.rv}"
        assert sum(1 for p in live if _ready(p)) >= 3, f"below 3 available at rv {e.rv}"
    sets = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
        for rs in cluster.items(REPLICASETS, NS)
    }
    assert sets == {"chaos-demo:v1": 0, "chaos-demo:v2": 3}  # the old set stays, scaled to 0
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"


def test_an_ephemeral_container_whose_image_cannot_be_pulled(
    cluster: EmulatedCluster, core: Any
) -> None:
    v1, _ = core
    cluster.unpullable_images.add("nicolaka/netshoot:v0.13")
    pod = next(cluster.pods_of(NS, "api"))["metadata"]["name"]
    v1.patch_namespaced_pod_ephemeralcontainers(
        pod,
        NS,
        {
            "spec": {
                "ephemeralContainers": [
                    {"name": "net", "image": "nicolaka/netshoot:v0.13", "command": ["sleep", "1d"]}
                ]
            }
        },
    )

    def reason() -> str | None:
        for s in (cluster.obj(PODS, NS, pod) or {}).get("status", {}).get(
            "ephemeralContainerStatuses"
        ) or ():
            return (s.get("state", {}).get("waiting") or {}).get("reason")
        return None

    cluster.eventually(lambda: reason() == "ImagePullBackOff")
    reasons = [
        (s.get("state", {}).get("waiting") or {}).get("reason")
        for t, o in pod_events(cluster)
        if o["metadata"]["name"] == pod
        for s in o.get("status", {}).get("ephemeralContainerStatuses") or ()
    ]
    assert reasons.index("ErrImagePull") < reasons.index("ImagePullBackOff")
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import stream

    with pytest.raises(ApiException) as info:  # exec into it: the kubelet has no container
        stream(
            v1.connect_get_namespaced_pod_exec,
            pod,
            NS,
            command=["iptables", "-L"],
            container="net",
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
        )
    assert "container not found" in str(info.value)


def test_pods_stay_pending_while_no_node_is_schedulable(
    cluster: EmulatedCluster, core: Any
) -> None:
    v1, _ = core
    for node in ("worker-1", "worker-2", "worker-3"):
        v1.patch_node(node, {"spec": {"unschedulable": True}})
    victim = next(cluster.pods_of(NS, "api"))["metadata"]["name"]
    v1.delete_namespaced_pod(victim, NS, grace_period_seconds=0)

    def pending() -> list[dict[str, Any]]:
        return [p for p in cluster.pods_of(NS, "api") if p["status"].get("phase") == "Pending"]

    (waiting,) = cluster.eventually(pending)
    assert not waiting["spec"].get("nodeName")  # the scheduler found no node
    v1.patch_node("worker-2", {"spec": {"unschedulable": None}})
    cluster.eventually(
        lambda: (
            (cluster.obj(PODS, NS, waiting["metadata"]["name"]) or {})
            .get("spec", {})
            .get("nodeName")
            == "worker-2"
        )
    )
    cluster.eventually(lambda: len([p for p in cluster.pods_of(NS, "api") if _ready(p)]) == 3)
