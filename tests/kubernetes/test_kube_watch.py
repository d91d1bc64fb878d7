"""The list+watch loop (targets/kubernetes/watch.py) against the emulated API server's watch.

The emulator's watch behaves as kube-apiserver's watch cache does (kube_apiserver.py):
numeric resourceVersions, ``timeoutSeconds``, bookmarks, 410 Gone after compaction. Here a
connection dies without a FIN, history is compacted, and the loop must neither hang nor
miss an event, and re-list only when the server says the version is gone.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from kube_controllers import NODES, EmulatedCluster

from pytest_resilience.targets.base import EventKind, TargetEvent
from pytest_resilience.targets.kubernetes.watch import ResourceWatch, diff_pod

NS = "chaos-demo"


class Recorder:
    def __init__(self) -> None:
        self.events: list[TargetEvent] = []
        self.died = threading.Event()

    def __call__(self, event: TargetEvent) -> None:
        self.events.append(event)
        if event.kind == EventKind.POD_DIED:
            self.died.set()


def start_watch(core: Any, recorder: Recorder, timeout_s: int, **kw: Any) -> ResourceWatch:
    watch = ResourceWatch(
        name="pods",
        list_fn=functools.partial(core.list_namespaced_pod, NS),
        differ=diff_pod,
        emit=recorder,
        timeout_s=timeout_s,
        **kw,
    ).start()
    assert watch.synced.wait(30), "no baseline list"
    return watch


def pod_requests(cluster: EmulatedCluster, *, watch: bool) -> list[Any]:
    path = f"/api/v1/namespaces/{NS}/pods"
    return [
        r
        for r in cluster.requests()
        if r.path == path
        and (r.query.get("watch") == "true") == watch
        and "labelSelector" not in r.query  # not kill_one's own list
    ]


def kill_one(core: Any) -> str:
    pods = core.list_namespaced_pod(NS, label_selector="app=api").items
    name = pods[0].metadata.name
    core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    return str(name)


def touch_a_node(cluster: EmulatedCluster) -> None:
    """A write the pod watch never sees, so only a bookmark can carry its version."""

    async def patch() -> None:
        assert cluster.emu is not None
        async with cluster.emu._lock:
            await cluster.emu._patch(NODES, None, "worker-1", {"metadata": {"labels": {"x": "1"}}})

    cluster.run(patch())


def test_a_dead_connection_does_not_hang_the_watch(cluster: EmulatedCluster, core: Any) -> None:
    cluster.expire_watches["pods"] = "hang"  # the first watch: no byte, no FIN, ever
    recorder = Recorder()
    watch = start_watch(core, recorder, timeout_s=1)
    try:
        victim = kill_one(core)
        assert recorder.died.wait(30), "the watch thread hangs on a dead connection"
        assert victim in {e.pod for e in recorder.events if e.kind == EventKind.POD_DIED}
        # it watched again from its last version: no re-list for a dead connection
        assert len(pod_requests(cluster, watch=False)) == 1
        assert len(pod_requests(cluster, watch=True)) >= 2
        versions = [r.query.get("resourceVersion") for r in pod_requests(cluster, watch=True)]
        assert all(v and v.isdigit() for v in versions)
    finally:
        watch.stop()


def test_watch_requests_ask_for_bookmarks_and_a_server_timeout(
    cluster: EmulatedCluster, core: Any
) -> None:
    watch = start_watch(core, Recorder(), timeout_s=7)
    try:
        cluster.eventually(lambda: pod_requests(cluster, watch=True))
        (first, *_) = pod_requests(cluster, watch=True)
        assert first.query["timeoutSeconds"] == "7"
        assert first.query["allowWatchBookmarks"] == "true"
        listed = pod_requests(cluster, watch=False)[0]
        assert "resourceVersion" not in listed.query  # the first list: the current state
    finally:
        watch.stop()


def test_compacted_history_forces_a_relist_that_reports_what_was_missed(
    cluster: EmulatedCluster, core: Any
) -> None:
    cluster.watch_options.bookmark_interval_s = 3600.0  # a server that sends no bookmark
    cluster.watch_options.bookmark_before_deadline_s = 0.0
    recorder = Recorder()
    cluster.expire_watches["pods"] = "end"  # the first watch ends at once ...
    watch = start_watch(core, recorder, timeout_s=1)
    try:
        cluster.eventually(lambda: len(pod_requests(cluster, watch=True)) >= 1)
        # ... while it is down, history moves on and is compacted
        touch_a_node(cluster)
        cluster.compact()
        cluster.eventually(lambda: len(pod_requests(cluster, watch=False)) == 2, timeout=20)
        victim = kill_one(core)
        assert recorder.died.wait(20)
        assert victim in {e.pod for e in recorder.events if e.kind == EventKind.POD_DIED}
    finally:
        watch.stop()


def test_a_bookmark_carries_the_version_past_a_compaction(
    cluster: EmulatedCluster, core: Any
) -> None:
    cluster.watch_options.bookmark_interval_s = 0.1
    recorder = Recorder()
    watch = start_watch(core, recorder, timeout_s=1)
    try:
        touch_a_node(cluster)
        node_rv = int(cluster.obj(NODES, None, "worker-1")["metadata"]["resourceVersion"])
        # a bookmark after the node write moves the watch's version to it ...
        cluster.eventually(
            lambda: any(
                int(r.query.get("resourceVersion") or 0) >= node_rv
                for r in pod_requests(cluster, watch=True)
            ),
            timeout=20,
        )
        cluster.compact()  # ... so a compaction at that version costs no re-list
        watches = len(pod_requests(cluster, watch=True))
        cluster.eventually(lambda: len(pod_requests(cluster, watch=True)) > watches, timeout=20)
        victim = kill_one(core)
        assert recorder.died.wait(20)
        assert victim in {e.pod for e in recorder.events if e.kind == EventKind.POD_DIED}
        assert len(pod_requests(cluster, watch=False)) == 1
    finally:
        watch.stop()


def test_a_list_on_a_dead_connection_is_retried(cluster: EmulatedCluster, core: Any) -> None:
    cluster.hang_lists.add("pods")  # the first list's answer never comes
    recorder = Recorder()
    watch = start_watch(core, recorder, timeout_s=5, list_timeout_s=1.0)
    try:
        assert len(pod_requests(cluster, watch=False)) == 2  # given up on, listed again
        victim = kill_one(core)
        assert recorder.died.wait(20)
        assert victim in {e.pod for e in recorder.events if e.kind == EventKind.POD_DIED}
    finally:
        watch.stop()


def test_a_watch_request_answered_410_lists_again(cluster: EmulatedCluster, core: Any) -> None:
    cluster.expire_watches["pods"] = "http410"
    recorder = Recorder()
    watch = start_watch(core, recorder, timeout_s=5)
    try:
        cluster.eventually(lambda: len(pod_requests(cluster, watch=False)) == 2)
        victim = kill_one(core)
        assert recorder.died.wait(20)
        assert victim in {e.pod for e in recorder.events if e.kind == EventKind.POD_DIED}
    finally:
        watch.stop()


def test_a_graceful_deletion_is_a_pod_stopping_not_a_pod_dying():
    """A rollout deletes its old pods gracefully; counted as deaths they fed PodCrashLoop."""
    pod = {
        "metadata": {"name": "api-7d9f-x2k4q", "labels": {"app": "api"}},
        "spec": {"nodeName": "chaos-worker"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    terminating = {
        **pod,
        "metadata": {**pod["metadata"], "deletionTimestamp": "2026-12-01T00:00:00Z"},
    }
    kinds = [e.kind for e in diff_pod(pod, terminating)] + [
        e.kind for e in diff_pod(terminating, None)
    ]
    assert EventKind.POD_DIED not in kinds
    assert EventKind.POD_NOT_READY in kinds
    assert [e.kind for e in diff_pod(pod, None)] == [EventKind.POD_DIED]  # deleted at once: a kill
