"""Autoscaling on Kubernetes: a real autoscaling/v2 HorizontalPodAutoscaler, watched.

The spec (:class:`~..hpa_spec.AutoscalerSpec`, read from a manifest such as
deploy/k8s/autoscaling/api-hpa.yaml) becomes an HPA object named after it in the target's
namespace, created or replaced; the cluster's HPA controller acts on it with the pods' CPU
from metrics-server. While any autoscaler of ours exists, a list+watch of the namespace's
HPAs (the target's :class:`~.watch.ResourceWatch`) turns each rescale the controller
records (``status.lastScaleTime`` moves, ``desiredReplicas`` changes) into an
``autoscaled`` target event, ``"3 -> 6: cpu above target (28m per pod, target cpu 12m per
pod)"``, so the decision lands on the timeline as the local autoscaler's does. No polling.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..base import EventKind, TargetEvent
from ..hpa_spec import AutoscalerSpec, AutoscalerStatus
from .api import KubeConflict, KubeNotFound
from .watch import ResourceWatch

if TYPE_CHECKING:
    from .safety import ChaosPolicy

__all__ = ["KubeAutoscaling", "diff_hpa", "hpa_status"]

Obj = dict[str, Any]
MANAGED_BY = {"app.kubernetes.io/managed-by": "pytest-resilience"}


class KubeAutoscaling:
    """The Autoscaling capability of :class:`~.target.KubernetesTarget` (a mixin)."""

    namespace: str
    policy: ChaosPolicy
    conn: Any
    _watch_timeout_s: int
    _change: Callable[..., dict[str, Any] | None]
    _read: Callable[..., dict[str, Any]]
    _emit: Callable[[TargetEvent], None]
    _client: Any
    _watch_clients: list[Any]
    _hpa_watch: ResourceWatch | None
    _hpa_watch_lock: threading.Lock

    def autoscale(self, spec: AutoscalerSpec) -> None:
        """Create (or replace) the HPA ``spec`` describes; ``autoscaled`` events follow."""
        import kubernetes.client as kc

        api = kc.AutoscalingV2Api(self._client)
        name = spec.name or spec.workload
        body = spec.to_object(namespace=self.namespace, labels=MANAGED_BY)
        self._watch_autoscalers()
        try:
            self._change(
                f"CREATE horizontalpodautoscaler {self.namespace}/{name}",
                api.create_namespaced_horizontal_pod_autoscaler,
                self.namespace,
                body,
                verb="create",
                resource="horizontalpodautoscalers",
                namespace=self.namespace,
                name=name,
            )
        except KubeConflict:  # one by that name already: ours now, with this spec
            spec_patch = dict(body["spec"])
            spec_patch.setdefault("behavior", None)  # a merge patch: null removes an old one
            self._change(
                f"PATCH horizontalpodautoscaler {self.namespace}/{name}",
                api.patch_namespaced_horizontal_pod_autoscaler,
                name,
                self.namespace,
                {"metadata": {"labels": MANAGED_BY}, "spec": spec_patch},
                verb="patch",
                resource="horizontalpodautoscalers",
                namespace=self.namespace,
                name=name,
            )

    def stop_autoscaling(self, workload: str) -> None:
        """Delete the HPA that scales ``workload`` (none: nothing to do)."""
        import kubernetes.client as kc

        api = kc.AutoscalingV2Api(self._client)
        hpa = self._hpa_of(workload)
        if hpa is None:
            return
        name = hpa["metadata"]["name"]
        with contextlib.suppress(KubeNotFound):  # deleted meanwhile: gone all the same
            self._change(
                f"DELETE horizontalpodautoscaler {self.namespace}/{name}",
                api.delete_namespaced_horizontal_pod_autoscaler,
                name,
                self.namespace,
                verb="delete",
                resource="horizontalpodautoscalers",
                namespace=self.namespace,
                name=name,
            )

    def autoscaler_status(self, workload: str) -> AutoscalerStatus | None:
        hpa = self._hpa_of(workload)
        return None if hpa is None else hpa_status(hpa)

    def _hpa_of(self, workload: str) -> Obj | None:
        import kubernetes.client as kc

        listed = self._read(
            kc.AutoscalingV2Api(self._client).list_namespaced_horizontal_pod_autoscaler,
            self.namespace,
            verb="list",
            resource="horizontalpodautoscalers",
            namespace=self.namespace,
        )
        for hpa in listed.get("items") or []:
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name") == workload:
                return dict(hpa)
        return None

    def _watch_autoscalers(self) -> None:
        """The namespace's HPAs, watched once for the target's life (closed with it)."""
        import kubernetes.client as kc

        with self._hpa_watch_lock:
            if self._hpa_watch is not None:
                return
            client = self.conn.api_client()
            self._watch_clients.append(client)
            watch = ResourceWatch(
                name="horizontalpodautoscalers",
                list_fn=functools.partial(
                    kc.AutoscalingV2Api(client).list_namespaced_horizontal_pod_autoscaler,
                    self.namespace,
                ),
                differ=diff_hpa,
                emit=self._emit,
                timeout_s=self._watch_timeout_s,
            )
            self._hpa_watch = watch.start()

    def _stop_watching_autoscalers(self) -> None:
        with self._hpa_watch_lock:
            watch, self._hpa_watch = self._hpa_watch, None
        if watch is not None:
            watch.stop()


def hpa_status(hpa: Mapping[str, Any]) -> AutoscalerStatus:
    spec = AutoscalerSpec.from_object(hpa)
    status = hpa.get("status") or {}
    return AutoscalerStatus(
        workload=spec.workload,
        current_replicas=int(status.get("currentReplicas") or 0),
        desired_replicas=int(status.get("desiredReplicas") or 0),
        current_metric=_current_metric(status),
        last_scale_at=_timestamp(status.get("lastScaleTime")),
        problem=next(
            (
                str(c.get("message") or c.get("reason") or "")
                for c in status.get("conditions") or []
                if c.get("type") == "ScalingActive" and c.get("status") == "False"
            ),
            "",
        ),
    )


def diff_hpa(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[TargetEvent]:
    """An ``autoscaled`` event for each rescale the HPA controller recorded in the status."""
    if new is None:
        return []
    status = new.get("status") or {}
    before = (old or {}).get("status") or {}
    moved = status.get("lastScaleTime") and status.get("lastScaleTime") != before.get(
        "lastScaleTime"
    )
    if not moved:
        return []
    spec = AutoscalerSpec.from_object(new)
    current = int(status.get("currentReplicas") or 0)
    desired = int(status.get("desiredReplicas") or 0)
    why = "above target" if desired > current else "below target"
    detail = (
        f"{current} -> {desired}: {spec.metric.resource} {why} "
        f"({_current_metric(status) or 'no metric yet'}, target {spec.metric.describe()})"
    )
    return [
        TargetEvent(
            EventKind.AUTOSCALED,
            workload=spec.workload,
            detail=detail,
            at=_timestamp(status.get("lastScaleTime")) or _dt.datetime.now().timestamp(),
        )
    ]


def _current_metric(status: Mapping[str, Any]) -> str:
    for metric in status.get("currentMetrics") or []:
        current = (metric.get("resource") or {}).get("current") or {}
        if current.get("averageUtilization") is not None:
            return f"{current['averageUtilization']}% of request"
        if current.get("averageValue") is not None:
            return f"{current['averageValue']} per pod"
    return ""


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
