"""API objects as the target's types: a pod listing to :class:`~..base.Pod`, a Deployment to
:class:`~..base.Workload`, a Node to :class:`~..base.Node`, and the readings of a raw object
the target's calls share (labels, selector strings, readiness of a rollout, timestamps).

Every object here is the API server's JSON as plain dicts (the target reads with
``_preload_content=False``: no model deserialization), so these take ``Mapping[str, Any]``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from ..base import Node, Pod, Workload
from .releases import release_of
from .watch import pod_is_ready, pod_workload

__all__ = [
    "deployment_ready",
    "evictable",
    "labels_of",
    "node_of",
    "not_ready_message",
    "pod_of",
    "selector_string",
    "terminating",
    "timestamp",
    "workload_of",
]


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def pod_of(obj: Mapping[str, Any], release_env: str = "DEMO_VERSION") -> Pod:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    labels = labels_of(obj)
    return Pod(
        name=meta.get("name", ""),
        workload=pod_workload(obj),
        namespace=meta.get("namespace") or "default",
        labels=labels,
        node=spec.get("nodeName"),
        host=status.get("podIP") or "",
        ready=pod_is_ready(obj),
        version=release_of(obj, release_env),
    )


def workload_of(obj: Mapping[str, Any], release_env: str = "DEMO_VERSION") -> Workload:
    """A Deployment; ``version`` is the release its template runs (not the revision)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    return Workload(
        name=meta.get("name", ""),
        namespace=meta.get("namespace") or "default",
        replicas=int(spec.get("replicas", 1)),
        ready_replicas=int(status.get("readyReplicas") or 0),
        version=release_of(spec.get("template"), release_env),
        labels=dict((spec.get("selector") or {}).get("matchLabels") or {}),
    )


def node_of(obj: Mapping[str, Any]) -> Node:
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in obj.get("status", {}).get("conditions") or ()
    )
    return Node(
        name=obj["metadata"]["name"],
        ready=ready,
        schedulable=not obj.get("spec", {}).get("unschedulable", False),
    )


def evictable(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata", {})
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return False
    if any(ref.get("kind") == "DaemonSet" for ref in meta.get("ownerReferences") or ()):
        return False
    return obj.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def deployment_ready(obj: Mapping[str, Any], replicas: int | None) -> bool:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    want = spec.get("replicas", 1) if replicas is None else replicas
    if meta.get("generation") and int(status.get("observedGeneration") or 0) < int(
        meta["generation"]
    ):
        return False
    return (
        int(status.get("updatedReplicas") or 0) >= want
        and int(status.get("readyReplicas") or 0) >= want
        and int(status.get("replicas") or 0) <= max(want, int(spec.get("replicas", want)))
    )


def not_ready_message(obj: Mapping[str, Any], replicas: int | None, timeout: float) -> str:
    status = obj.get("status", {})
    want = obj.get("spec", {}).get("replicas", 1) if replicas is None else replicas
    return (
        f"deployment {obj.get('metadata', {}).get('name')} not ready after {timeout}s: "
        f"ready {status.get('readyReplicas') or 0}/{want}, updated "
        f"{status.get('updatedReplicas') or 0}/{want}, total {status.get('replicas') or 0}"
        " (kubectl describe deployment; kubectl get events)"
    )


def timestamp(value: Any) -> int:
    if not value:
        return 0
    try:
        return int(_dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
