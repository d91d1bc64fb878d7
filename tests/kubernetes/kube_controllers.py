"""A kmock KubernetesEmulator with the components a real cluster would run around it.

kmock's emulator stores objects and serves get/patch/delete over real HTTP, but runs no
controllers and knows no subresources. The KubernetesTarget is tested against it through
the official client, so the pieces a cluster adds are here, each labelled with the real
component (and the source file in kubernetes/kubernetes it was checked against):

- :mod:`kube_apiserver`  list and watch as kube-apiserver serves them: numeric
                         resourceVersions, 410 Gone for a compacted version, bookmarks,
                         ``timeoutSeconds``, label and field selectors server-side;
- ``_create``            ``metadata.generateName``: the API server appends 5 random
                         characters (apiserver/pkg/storage/names/generate.go);
- ``_delete_pod``        graceful deletion (pkg/registry/core/pod/strategy.go
                         CheckGracefulDelete): Terminating (deletionTimestamp) first, the
                         kubelet's final delete after the grace period; grace 0 removes
                         the pod at once;
- ``_reconcile``         the Deployment controller (pkg/controller/deployment/rolling.go,
                         sync.go: RollingUpdate with maxSurge/maxUnavailable, Recreate,
                         revisions), the ReplicaSet controller (pkg/controller/replicaset/
                         replica_set.go manageReplicas, controller_utils.go: pods named
                         ``<replicaset>-<5 random>``, deletion ranking) and the scheduler
                         (spreads pods of one owner over schedulable nodes, random among
                         equals as pkg/scheduler/schedule_one.go selectHost);
- ``_kubelet_*``         the kubelet: start (Running), readiness only after the readiness
                         probe's first period (pkg/kubelet/prober/worker.go), container
                         restarts, termination, ephemeral containers whose image may fail
                         to pull (ErrImagePull, then ImagePullBackOff);
- ``_serve_exec``        the exec subresource (websocket, v4 channel protocol): the API
                         server's container check (400 "container X is not valid for pod
                         Y"), the runtime's "executable file not found in $PATH" for a
                         binary the image lacks (an InternalError Status on the error
                         channel, as pkg/kubelet/cri/streaming/remotecommand writes it),
                         and a tiny model of what the fault commands do; nothing runs here;
- ``_serve_pod_proxy``   the pod proxy subresource (ProxyREST: the port as given, the
                         pod's answer passed through, 503 when nothing answers), and
  ``_serve_log``         the log subresource (tailLines, container required for several);
- ``_serve_eviction``    the Eviction API with PodDisruptionBudget checks (429), then a
                         graceful delete (pkg/registry/core/pod/storage/eviction.go);
- ``forbid`` / ``refuse_ephemeral``  RBAC and PodSecurity admission refusing a request;
- ``_hpa_controller``    STAND-IN for metrics-server and the HorizontalPodAutoscaler
                         controller (pkg/controller/podautoscaler/horizontal.go
                         reconcileAutoscaler, every sync period): each autoscaling/v2 HPA's
                         pods' CPU (``EmulatedCluster.pod_usage_m``: set by a test here, the
                         real processes' in kube_kubelet.py), the same arithmetic the
                         local target runs (targets/hpa.py, checked against Kubernetes' own
                         test cases), the Deployment's replicas through its scale, and the
                         HPA's status (current/desired replicas, currentMetrics,
                         lastScaleTime) as the controller writes it.

Emulated time is scaled (``TIME_SCALE``): a 2 s probe period takes 20 ms here.

The emulator runs in its own event loop thread so the synchronous client under test can
talk to it from the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import psutil
from kube_apiserver import History, StampingBus, WatchOptions, now, serve_list, serve_watch

PODS = kmock.resource("v1/pods")
NODES = kmock.resource("v1/nodes")
SERVICES = kmock.resource("v1/services")
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
REPLICASETS = kmock.resource("apps/v1/replicasets")
PDBS = kmock.resource("policy/v1/poddisruptionbudgets")
NETPOLS = kmock.resource("networking.k8s.io/v1/networkpolicies")
PVCS = kmock.resource("v1/persistentvolumeclaims")
HPAS = kmock.resource("autoscaling/v2/horizontalpodautoscalers")
KUBELET_STARTUP_S = 0.02  # the emulated kubelet's container start latency
TIME_SCALE = 0.01  # one second of a real probe period or grace period, in emulated seconds
_REVISION = "deployment.kubernetes.io/revision"
#: deployment_util.go annotationsToSkip: never copied from a Deployment to its ReplicaSets
_RS_ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        _REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
# apimachinery/pkg/util/rand/rand.go: no vowels (no words), no 0/1/3 (no look-alikes)
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
#: executables in the demo image (python:3.11-slim + the app): no kill (procps), no
#: iptables, no ps. An image missing from ``EmulatedCluster.image_binaries`` has them all.
DEMO_IMAGE_BINARIES = frozenset(
    {"sh", "python", "python3", "cat", "rm", "df", "du", "fallocate", "dd", "ls", "sleep", "echo"}
)


def _now(offset_s: float = 0) -> str:
    return now(offset_s)


def random_suffix(rng: random.Random, n: int = 5) -> str:
    """utilrand.String(5): the suffix generateName gets."""
    return "".join(rng.choice(_ALPHANUMS) for _ in range(n))


def _template_hash(template: dict[str, Any]) -> str:
    """controller.ComputeHash: fnv32a over the template, then rand.SafeEncodeString."""
    t = json.loads(json.dumps(template))
    (t.get("metadata") or {}).get("labels", {}).pop("pod-template-hash", None)
    h = 0x811C9DC5
    for byte in json.dumps(t, sort_keys=True).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(h))


def _image_id(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"docker.io/library/{image.split(':')[0]}@sha256:{digest}"


def _pull_error(image: str) -> str:
    return (
        f'failed to pull and unpack image "{image}": failed to resolve reference: '
        "dial tcp: lookup registry-1.docker.io: no such host"
    )


def _epoch(stamp: Any) -> float | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def _condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
    }


def _is_terminating(pod: dict[str, Any]) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def _is_ready(pod: dict[str, Any]) -> bool:
    return not _is_terminating(pod) and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _active(pod: dict[str, Any]) -> bool:
    """controller.FilterActivePods: not terminating, not finished."""
    return not _is_terminating(pod) and pod.get("status", {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def _probe_delay(container: dict[str, Any]) -> float | None:
    """Seconds until the readiness probe first succeeds; None: no probe, ready when running."""
    probe = container.get("readinessProbe")
    if not probe:
        return None
    return (int(probe.get("initialDelaySeconds", 0)) + int(probe.get("periodSeconds", 10))) * (
        TIME_SCALE
    )


@dataclass
class ContainerModel:
    """What the emulated kubelet tracks about effects of exec'd commands in one pod."""

    hooks: set[str] = field(default_factory=set)  # iptables "HOOK CHAIN" pairs
    files: dict[str, int] = field(default_factory=dict)  # path -> MiB
    paused: bool = False


def _kill_all_reply(spec: dict[str, Any], argv: list[str]) -> tuple[int, str, str] | None:
    """kill(2) with pid -1 from a shell in the container: every process but PID 1 and the
    shell itself. Without an init in front of the app (``shareProcessNamespace``, tini)
    there is none, and the shell's kill says ESRCH."""
    script = argv[2] if argv[:2] == ["sh", "-c"] else ""
    if re.fullmatch(r"\s*kill -\w+ -1\s*", script) and not spec.get("shareProcessNamespace"):
        return (1, "", "sh: 1: kill: No such process\n")
    return None


class _Buses(dict[Any, StampingBus]):
    """Where kmock looks up a resource's event bus: every write is stamped and kept."""

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history

    def __missing__(self, res: Any) -> StampingBus:
        bus = self[res] = StampingBus(self.history, res)
        return bus


#: an RBAC verb -> the HTTP method of a request it authorizes (requestinfo.go, reversed)
_VERB_METHODS = {
    "get": "GET", "list": "GET", "watch": "GET", "create": "POST",
    "update": "PUT", "patch": "PATCH", "delete": "DELETE",
}  # fmt: skip


class ClusterEmulator(kmock.KubernetesEmulator):
    cluster: EmulatedCluster

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        c = self.cluster
        plural = request.resource.plural if request.resource else None
        method = str(request.method.value).upper()
        if plural == "selfsubjectaccessreviews" and method == "POST":
            return self._access_review(request)
        rule = (method, plural, request.subresource)
        for m, res, sub, message in c.forbidden:
            if (m, res, sub) == rule:
                return await self._render_error(
                    kmock.KubernetesError(status=403, reason="Forbidden", message=message)
                )
        try:
            if request.action == kmock.action.WATCH and plural:
                how = c.expire_watches.pop(plural, None)
                if how in ("end", "410"):
                    return await self._expire_watch(request, how)
                if how == "http410":  # an older apiserver: the watch request itself is 410
                    raise kmock.KubernetesError(
                        status=410,
                        reason="Expired",
                        message="too old resource version: 1 (2)",
                    )
                return await serve_watch(
                    self, c.history, request, c.watch_options, hang=how == "hang"
                )
            if request.action == kmock.action.LIST and plural and not request.subresource:
                if plural in c.hang_lists:  # a dead connection: the answer never comes
                    c.hang_lists.discard(plural)
                    await asyncio.Event().wait()
                return serve_list(self, c.history, request)
        except kmock.KubernetesError as exc:  # a bad selector or resourceVersion: 400
            return await self._render_error(exc)
        if request.subresource == "exec":
            return await self._serve_exec(request)
        sub = request.subresource or ""
        if plural == "pods" and (sub == "proxy" or sub.startswith("proxy/")):
            refusal = [t for m, r, s, t in c.forbidden if (m, r, s) == (method, "pods", "proxy")]
            if refusal:  # RBAC on pods/proxy
                return await self._render_error(
                    kmock.KubernetesError(status=403, reason="Forbidden", message=refusal[0])
                )
            return await self._serve_pod_proxy(request, method, sub.removeprefix("proxy"))
        if plural == "pods" and sub == "log" and method == "GET":
            return await self._serve_log(request)
        if request.subresource == "eviction" and method == "POST":
            return await self._serve_eviction(request)
        if plural == "pods" and method == "DELETE" and request.name and not request.subresource:
            return await self._delete_pod(request)
        if request.subresource == "ephemeralcontainers" and c.refuse_ephemeral:
            return await self._render_error(
                kmock.KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f'pods "{request.name}" is forbidden: violates PodSecurity '
                    '"baseline:latest": non-default capabilities (container uses NET_ADMIN)',
                )
            )
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + random_suffix(c.rng)
        generation = None
        if plural == "deployments" and method == "PATCH" and request.subresource != "status":
            current = self._get(DEPLOYMENTS, request.namespace, request.name)
            if current is not None:
                generation = int(current.get("metadata", {}).get("generation") or 1) + 1
        response = await super()._handle(request)
        if response.status >= 400:
            return response
        # After-effects: what the controllers would do once the API server accepted a write.
        if generation is not None:
            async with self._lock:
                await self._patch(
                    DEPLOYMENTS,
                    request.namespace,
                    request.name,
                    {"metadata": {"generation": generation}},
                )
            c.spawn(self._reconcile(request.namespace, request.name))
        elif plural == "pods" and request.subresource == "ephemeralcontainers":
            c.spawn(self._kubelet_start_ephemeral(request.namespace, request.name))
        elif plural == "nodes" and method == "PATCH":  # uncordon: Pending pods may now fit
            for ns in {d["metadata"]["namespace"] for d in self._items(DEPLOYMENTS, None)}:
                c.spawn(self._reconcile_all(ns))
        return response

    async def _expire_watch(self, request: Any, how: str) -> aiohttp.web.StreamResponse:
        """The API server ending a watch: its timeout ("end") or a compacted version ("410")."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        if how == "410":
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version: 1 (2)",
            }
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
        await response.write_eof()
        return response

    # ------------------------------------------- STAND-IN: metrics-server + HPA controller

    async def _hpa_controller(self) -> None:
        """reconcileAutoscaler for every HPA, once per sync period, until the emulator stops."""
        from pytest_resilience.targets.hpa import HorizontalController, PodSample, resource_replicas
        from pytest_resilience.targets.hpa_spec import AutoscalerSpec, _parse_milli

        c = self.cluster
        if hasattr(self, "runtime"):  # real processes: real seconds of CPU to measure
            c.hpa_sync_s, c.hpa_window_s = 2.0, 4.0
        controllers: dict[tuple[str, str], HorizontalController] = {}
        while True:
            await asyncio.sleep(c.hpa_sync_s)
            for hpa in list(self._items(HPAS, None)):
                ns, name = hpa["metadata"]["namespace"], hpa["metadata"]["name"]
                try:
                    spec = AutoscalerSpec.from_object(hpa)
                except Exception as exc:  # the real controller sets ScalingActive=False
                    await self._hpa_status(
                        ns,
                        name,
                        {
                            "conditions": [
                                _condition("ScalingActive", "False", "InvalidSpec", str(exc))
                            ]
                        },
                    )
                    continue
                known = controllers.get((ns, name))
                if known is None or known.spec != spec:
                    known = controllers[(ns, name)] = HorizontalController(spec)
                dep = self._get(DEPLOYMENTS, ns, spec.workload)
                if dep is None:
                    continue
                current = int(dep["spec"].get("replicas", 1))
                wanted = dep["spec"].get("selector", {}).get("matchLabels") or {}
                at = time.time()
                samples = []
                for pod in self._items(PODS, ns):
                    labels = pod["metadata"].get("labels") or {}
                    if any(labels.get(k) != v for k, v in wanted.items()):
                        continue
                    status = pod.get("status") or {}
                    cond = next(
                        (x for x in status.get("conditions") or [] if x.get("type") == "Ready"),
                        None,
                    )
                    requests = [
                        _parse_milli(
                            ((ctr.get("resources") or {}).get("requests") or {}).get("cpu")
                        )
                        for ctr in pod["spec"].get("containers") or []
                    ]
                    # seeded pods have no startTime: Running since before the test
                    started = (
                        _epoch(status.get("startTime") or pod["metadata"].get("creationTimestamp"))
                        or 0.0
                    )
                    samples.append(
                        PodSample(
                            name=pod["metadata"]["name"],
                            usage_m=c.pod_usage_m(ns, pod["metadata"]["name"]),
                            request_m=None if None in requests else sum(requests),  # type: ignore[arg-type]
                            phase=status.get("phase", "Pending"),
                            ready=bool(cond and cond.get("status") == "True"),
                            deleting=_is_terminating(pod),
                            started_at=started,
                            # this emulator's kubelet writes no lastTransitionTime: the start
                            ready_since=(_epoch(cond.get("lastTransitionTime")) or started)
                            if cond
                            else None,
                            metric_at=at,
                            metric_window_s=c.hpa_window_s,
                        )
                    )
                try:
                    proposed, usage = resource_replicas(current, spec.metric, samples, now=at)
                except ValueError as exc:
                    await self._hpa_status(
                        ns,
                        name,
                        {
                            "currentReplicas": current,
                            "desiredReplicas": current,
                            "conditions": [
                                _condition(
                                    "ScalingActive", "False", "FailedGetResourceMetric", str(exc)
                                )
                            ],
                        },
                    )
                    continue
                decision = known.reconcile(current, proposed, now=at)
                value = (
                    {"averageValue": f"{usage}m"}
                    if spec.metric.type == "AverageValue"
                    else {"averageUtilization": usage}
                )
                status_patch: dict[str, Any] = {
                    "currentReplicas": current,
                    "desiredReplicas": decision.desired,
                    "currentMetrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "current": value}}
                    ],
                    "conditions": [
                        _condition(
                            "ScalingActive",
                            "True",
                            "ValidMetricFound",
                            "the HPA was able to compute the replica count",
                        )
                    ],
                }
                if decision.rescale:
                    async with self._lock:  # through the scale subresource: replicas only
                        await self._patch(
                            DEPLOYMENTS, ns, spec.workload, {"spec": {"replicas": decision.desired}}
                        )
                    c.spawn(self._reconcile(ns, spec.workload))
                    status_patch["lastScaleTime"] = _now()
                    c.hpa_decisions.append((name, current, decision.desired))
                await self._hpa_status(ns, name, status_patch)

    async def _hpa_status(self, ns: str, name: str, status: dict[str, Any]) -> None:
        async with self._lock:
            await self._patch(HPAS, ns, name, {"status": status})

    # ---------------------------------------------------------- store access

    def _get(self, res: Any, ns: str | None, name: str) -> dict[str, Any] | None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return json.loads(json.dumps(self._objects[key].raw))

    def _items(self, res: Any, ns: str | None) -> list[dict[str, Any]]:
        """The stored objects, not copies (the controllers only read them, as from an
        informer cache); writes go through ``_patch``. Copying 1,000 pods on every pass
        would make the emulator, not the client, slower with a bigger namespace."""
        return [
            o.raw
            for (r, n, _), o in self._objects.items()
            if r == res and (ns is None or n == ns) and not o.deleted
        ]

    async def _create(self, res: Any, ns: str | None, body: dict[str, Any]) -> str:
        """Create as the API server would; ``generateName`` gets its random suffix."""
        meta = body["metadata"]
        if not meta.get("name"):
            meta["name"] = meta["generateName"] + random_suffix(self.cluster.rng)
        key = (res, ns, meta["name"])
        if key in self._objects:
            self._objects[key].create(body)
        else:
            self._objects[key] = body
        await self._buses[res].put({"type": "ADDED", "object": self._objects[key].raw})
        return str(meta["name"])

    async def _patch(self, res: Any, ns: str | None, name: str, patch: dict[str, Any]) -> None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return
        self._objects[key].patch(patch)
        await self._buses[res].put({"type": "MODIFIED", "object": self._objects[key].raw})

    async def _delete(self, res: Any, ns: str | None, name: str) -> None:
        key = (res, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return
        raw = self._objects[key].raw
        self._objects[key].delete()
        await self._buses[res].put({"type": "DELETED", "object": raw})

    # ------------------------------------------------------------------- RBAC

    def _access_review(self, request: Any) -> aiohttp.web.Response:
        """SelfSubjectAccessReview (authorization.k8s.io/v1, what ``kubectl auth can-i``
        posts): the spec comes back with ``status.allowed``; denied exactly where
        :meth:`EmulatedCluster.forbid` makes the request itself a 403 (the RBAC authorizer
        gives a denial no reason: ``allowed: false`` alone)."""
        body = request.data if isinstance(request.data, dict) else {}
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        rule = (
            _VERB_METHODS.get(str(attrs.get("verb", "")), ""),
            attrs.get("resource"),
            attrs.get("subresource") or None,
        )
        allowed = not any((m, r, s) == rule for m, r, s, _ in self.cluster.forbidden)
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": None},
            "spec": body.get("spec") or {},
            "status": {"allowed": allowed}
            | ({"reason": 'RBAC: allowed by RoleBinding "chaos/ci"'} if allowed else {}),
        }
        return aiohttp.web.json_response(review, status=201)

    # --------------------------------------------------------- graceful delete

    async def _delete_pod(self, request: Any) -> aiohttp.web.StreamResponse:
        """DELETE a pod: CheckGracefulDelete, then Terminating or gone at once."""
        ns, name = request.namespace, request.name
        grace: int | None = None
        raw_grace = request._raw_request.query.get("gracePeriodSeconds")
        if raw_grace not in (None, ""):
            grace = int(raw_grace)
        elif isinstance(request.data, dict) and request.data.get("gracePeriodSeconds") is not None:
            grace = int(request.data["gracePeriodSeconds"])
        async with self._lock:
            pod = self._get(PODS, ns, name)
            if pod is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            result = await self._graceful_delete(pod, grace)
        return aiohttp.web.json_response(result)

    async def _graceful_delete(self, pod: dict[str, Any], grace: int | None) -> dict[str, Any]:
        """Caller holds the lock. Returns the object as the DELETE response shows it."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if grace is None:
            grace = int(pod.get("spec", {}).get("terminationGracePeriodSeconds", 30))
        if not pod.get("spec", {}).get("nodeName") or pod.get("status", {}).get("phase") in (
            "Succeeded",
            "Failed",
        ):
            grace = 0
        if grace == 0:
            await self._delete(PODS, ns, name)
            self.cluster.spawn(self._reconcile_owner(pod))
            return pod
        if not _is_terminating(pod):
            await self._patch(
                PODS,
                ns,
                name,
                {
                    "metadata": {
                        "deletionTimestamp": _now(grace),
                        "deletionGracePeriodSeconds": grace,
                    }
                },
            )
            self.cluster.spawn(self._kubelet_terminate(ns, name, pod["metadata"].get("uid"), grace))
            self.cluster.spawn(self._reconcile_owner(pod))
        return self._get(PODS, ns, name) or pod

    async def _kubelet_terminate(self, ns: str, name: str, uid: Any, grace: int) -> None:
        """The kubelet: SIGTERM, wait (the app exits or the grace ends), then delete."""
        await asyncio.sleep(min(grace * TIME_SCALE, self.cluster.termination_s))
        async with self._lock:
            pod = self._get(PODS, ns, name)
            if pod is None or pod["metadata"].get("uid") != uid:
                return
            statuses = pod.get("status", {}).get("containerStatuses", [])
            for s in statuses:
                s["ready"] = False
                s["state"] = {"terminated": {"exitCode": 0, "reason": "Completed"}}
            await self._patch(
                PODS,
                ns,
                name,
                {
                    "status": {
                        "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "False"}],
                    }
                },
            )
            await self._delete(PODS, ns, name)  # the kubelet's final delete, grace 0
        self.cluster.spawn(self._reconcile_all(ns))

    # ------------------------------------- Deployment/ReplicaSet controllers

    async def _reconcile_owner(self, pod: dict[str, Any]) -> None:
        await self._reconcile_all(pod["metadata"]["namespace"])

    async def _reconcile_all(self, ns: str) -> None:
        for dep in self._items(DEPLOYMENTS, ns):
            await self._reconcile(ns, dep["metadata"]["name"])

    def _owned(self, res: Any, ns: str, owner_kind: str, owner: dict[str, Any]) -> list[Any]:
        uid = owner["metadata"].get("uid")
        return [
            o
            for o in self._items(res, ns)
            if any(
                r.get("kind") == owner_kind and r.get("uid") == uid
                for r in o["metadata"].get("ownerReferences", [])
            )
        ]

    async def _reconcile(self, ns: str, name: str) -> None:
        """The Deployment controller, then the ReplicaSet controller for each of its sets."""
        async with self._lock:
            dep = self._get(DEPLOYMENTS, ns, name)
            if dep is None:
                return
            spec = dep["spec"]
            replicas = int(spec.get("replicas", 1))
            template = spec["template"]
            h = _template_hash(template)
            owned = self._owned(REPLICASETS, ns, "Deployment", dep)
            revisions = [int(rs["metadata"]["annotations"][_REVISION]) for rs in owned]
            new = next(
                (rs for rs in owned if rs["metadata"]["labels"]["pod-template-hash"] == h), None
            )
            top = max(revisions, default=0)
            if spec.get("paused") and new is None:
                await self._update_status(ns, name)
                return
            if new is None:
                new = await self._new_replicaset(dep, h, top + 1)
                revision = top + 1
            else:
                revision = int(new["metadata"]["annotations"][_REVISION])
                if revision < top:  # a rollback makes the old ReplicaSet the newest revision
                    revision = top + 1
                    await self._patch(
                        REPLICASETS,
                        ns,
                        new["metadata"]["name"],
                        {"metadata": {"annotations": {_REVISION: str(revision)}}},
                    )
            if (dep["metadata"].get("annotations") or {}).get(_REVISION) != str(revision):
                await self._patch(
                    DEPLOYMENTS,
                    ns,
                    name,
                    {"metadata": {"annotations": {_REVISION: str(revision)}}},
                )
            olds = [rs for rs in owned if rs["metadata"]["name"] != new["metadata"]["name"]]
            sizes = {rs["metadata"]["name"]: int(rs["spec"].get("replicas", 0)) for rs in owned}
            sizes[new["metadata"]["name"]] = int(new["spec"].get("replicas", 0))
            pods = [p for p in self._items(PODS, ns) if p["metadata"].get("ownerReferences")]
            available = {
                rs["metadata"]["name"]: sum(
                    1 for p in self._pods_of_rs(pods, rs) if _active(p) and _is_ready(p)
                )
                for rs in [new, *olds]
            }
            new_name = new["metadata"]["name"]
            if not spec.get("paused"):
                self._rollout(spec, replicas, new_name, olds, sizes, available, pods)
            for rs in [new, *olds]:
                rs_name = rs["metadata"]["name"]
                if int(rs["spec"].get("replicas", 0)) != sizes[rs_name]:
                    await self._patch(
                        REPLICASETS, ns, rs_name, {"spec": {"replicas": sizes[rs_name]}}
                    )
            started: list[str] = []
            for rs in [new, *olds]:
                rs = self._get(REPLICASETS, ns, rs["metadata"]["name"]) or rs
                mine = self._pods_of_rs(pods, rs)
                started += await self._manage_replicas(rs, mine)
                for p in mine:  # the scheduler binds pods left Pending when no node fitted
                    if _active(p) and not p["spec"].get("nodeName"):
                        node = self._schedule(ns, rs)
                        if node:
                            await self._patch(
                                PODS, ns, p["metadata"]["name"], {"spec": {"nodeName": node}}
                            )
                            started.append(p["metadata"]["name"])
            await self._update_status(ns, name)
        for pod_name in started:
            self.cluster.spawn(self._kubelet_start(ns, pod_name, name))

    def _rollout(
        self,
        spec: dict[str, Any],
        replicas: int,
        new: str,
        olds: list[dict[str, Any]],
        sizes: dict[str, int],
        available: dict[str, int],
        pods: list[dict[str, Any]],
    ) -> None:
        """rolling.go rolloutRolling (or recreate.go), as replica counts per ReplicaSet."""
        strategy = spec.get("strategy") or {}
        old_names = [rs["metadata"]["name"] for rs in olds]
        if strategy.get("type") == "Recreate":
            for o in old_names:
                sizes[o] = 0
            old_pods_left = any(
                p for rs in olds for p in self._pods_of_rs(pods, rs)
            )  # terminating ones included: recreate waits for them
            sizes[new] = 0 if old_pods_left else replicas
            return
        rolling = strategy.get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _int_or_percent(
            rolling.get("maxUnavailable", "25%"), replicas, round_up=False
        )
        if surge == 0 and unavailable == 0:
            unavailable = 1  # deploymentutil.ResolveFenceposts
        # reconcileNewReplicaSet: NewRSNewReplicas
        if sizes[new] > replicas:
            sizes[new] = replicas
        elif sizes[new] < replicas:
            total = sum(sizes.values())
            room = replicas + surge - total
            if room > 0:
                sizes[new] += min(room, replicas - sizes[new])
        # reconcileOldReplicaSets: never below replicas - maxUnavailable available pods
        if not any(sizes[o] for o in old_names):
            return
        all_pods = sum(sizes.values())
        min_available = replicas - unavailable
        new_unavailable = sizes[new] - available.get(new, 0)
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        for o in old_names:  # cleanupUnhealthyReplicas first
            take = min(budget, sizes[o] - available.get(o, 0))
            if take > 0:
                sizes[o] -= take
                budget -= take
        total_available = sum(available.get(n, 0) for n in [new, *old_names])
        budget = total_available - min_available
        for o in old_names:  # scaleDownOldReplicaSetsForRollingUpdate
            take = min(budget, sizes[o], available.get(o, 0))
            if take > 0:
                sizes[o] -= take
                budget -= take

    def _pods_of_rs(self, pods: list[dict[str, Any]], rs: dict[str, Any]) -> list[dict[str, Any]]:
        uid = rs["metadata"].get("uid")
        return [
            p
            for p in pods
            if any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences", []))
        ]

    async def _new_replicaset(self, dep: dict[str, Any], h: str, revision: int) -> dict[str, Any]:
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        tmpl = json.loads(json.dumps(dep["spec"]["template"]))
        tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
        match = {**dep["spec"]["selector"]["matchLabels"], "pod-template-hash": h}
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{h}",  # deployment sync.go getNewReplicaSet
                "namespace": ns,
                "labels": {**tmpl["metadata"]["labels"]},
                # deployment_util.go SetNewReplicaSetAnnotations: the Deployment's own
                # annotations (change-cause and all) minus the skipped ones, and the revision
                "annotations": {
                    **{
                        k: v
                        for k, v in (dep["metadata"].get("annotations") or {}).items()
                        if k not in _RS_ANNOTATIONS_TO_SKIP
                    },
                    _REVISION: str(revision),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "uid": dep["metadata"].get("uid"),
                        "controller": True,
                    }
                ],
            },
            "spec": {"replicas": 0, "template": tmpl, "selector": {"matchLabels": match}},
        }
        rs_name = await self._create(REPLICASETS, ns, body)
        return self._get(REPLICASETS, ns, rs_name) or body

    async def _manage_replicas(self, rs: dict[str, Any], pods: list[dict[str, Any]]) -> list[str]:
        """replica_set.go manageReplicas: create or delete pods toward spec.replicas."""
        ns, rs_name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        active = [p for p in pods if _active(p)]
        want = int(rs["spec"].get("replicas", 0))
        started: list[str] = []
        if len(active) > want:
            # controller.ActivePodsWithRanks: unscheduled, pending, not ready, newest first
            def rank(p: dict[str, Any]) -> tuple[int, int, int, str]:
                return (
                    1 if p["spec"].get("nodeName") else 0,
                    1 if p.get("status", {}).get("phase") == "Running" else 0,
                    1 if _is_ready(p) else 0,
                    "".join(
                        chr(255 - ord(ch)) for ch in p["metadata"].get("creationTimestamp", "")
                    ),
                )

            for p in sorted(active, key=rank)[: len(active) - want]:
                await self._graceful_delete(p, None)
        for _ in range(len(active), want):
            tmpl = json.loads(json.dumps(rs["spec"]["template"]))
            node = self._schedule(ns, rs)
            started.append(
                await self._create(
                    PODS,
                    ns,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "generateName": f"{rs_name}-",  # controller_utils.go getPodsPrefix
                            "namespace": ns,
                            "creationTimestamp": _now(self.cluster.pod_age_offset_s),
                            "labels": dict(tmpl.get("metadata", {}).get("labels", {})),
                            "annotations": dict(tmpl.get("metadata", {}).get("annotations", {})),
                            "ownerReferences": [
                                {
                                    "apiVersion": "apps/v1",
                                    "kind": "ReplicaSet",
                                    "name": rs_name,
                                    "uid": rs["metadata"].get("uid"),
                                    "controller": True,
                                }
                            ],
                        },
                        "spec": {**tmpl.get("spec", {}), "nodeName": node},
                        "status": {"phase": "Pending"},
                    },
                )
            )
        return started

    def _schedule(self, ns: str, rs: dict[str, Any]) -> str | None:
        """The scheduler: a schedulable Ready node with the fewest pods of this ReplicaSet's
        workload, random among equals (schedule_one.go selectHost)."""
        nodes = [
            n["metadata"]["name"]
            for n in self._items(NODES, None)
            if not n.get("spec", {}).get("unschedulable")
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
        ]
        if not nodes:
            return None  # Pending, unschedulable
        labels = {k: v for k, v in rs["spec"]["selector"]["matchLabels"].items()}
        labels.pop("pod-template-hash", None)
        load = {n: 0 for n in nodes}
        for p in self._items(PODS, ns):
            node = p["spec"].get("nodeName")
            pl = p["metadata"].get("labels", {})
            if node in load and _active(p) and all(pl.get(k) == v for k, v in labels.items()):
                load[node] += 1
        least = min(load.values())
        return self.cluster.rng.choice(sorted(n for n, c in load.items() if c == least))

    async def _update_status(self, ns: str, name: str) -> None:
        """Status of the Deployment and its ReplicaSets (sync.go syncDeploymentStatus)."""
        dep = self._get(DEPLOYMENTS, ns, name)
        if dep is None:
            return
        h = _template_hash(dep["spec"]["template"])
        pods = [p for p in self._items(PODS, ns) if _active(p)]
        totals = {"replicas": 0, "updated": 0, "ready": 0}
        for rs in self._owned(REPLICASETS, ns, "Deployment", dep):
            mine = self._pods_of_rs(pods, rs)
            ready = sum(1 for p in mine if _is_ready(p))
            totals["replicas"] += len(mine)
            totals["ready"] += ready
            if rs["metadata"]["labels"].get("pod-template-hash") == h:
                totals["updated"] += len(mine)
            status = {
                "replicas": len(mine),
                "fullyLabeledReplicas": len(mine),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            if rs.get("status") != status:
                await self._patch(REPLICASETS, ns, rs["metadata"]["name"], {"status": status})
        want = int(dep["spec"].get("replicas", 1))
        await self._patch(
            DEPLOYMENTS,
            ns,
            name,
            {
                "status": {
                    "observedGeneration": dep["metadata"].get("generation", 1),
                    "replicas": totals["replicas"],
                    "updatedReplicas": totals["updated"],
                    "readyReplicas": totals["ready"],
                    "availableReplicas": totals["ready"],
                    "unavailableReplicas": max(want - totals["ready"], 0) or None,
                }
            },
        )

    # ----------------------------------------------------------------- kubelet

    async def _kubelet_start(self, ns: str, pod: str, deployment: str | None) -> None:
        """The kubelet: pull, start; Ready at once without a readiness probe, else after the
        probe's first period (initialDelaySeconds + periodSeconds)."""
        await asyncio.sleep(KUBELET_STARTUP_S)
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None or _is_terminating(obj) or not obj["spec"].get("nodeName"):
                return  # gone, going, or not scheduled: no kubelet runs it
            uid = obj["metadata"].get("uid")
            containers = obj.get("spec", {}).get("containers", []) or [{"name": "main"}]
            delays = [_probe_delay(c) for c in containers]
            ready_now = all(d is None for d in delays)
            self.cluster.serial += 1
            serial = self.cluster.serial
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "phase": "Running",
                        "podIP": f"10.244.{serial // 250}.{serial % 250 + 1}",
                        "startTime": _now(),
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": "Initialized", "status": "True"},
                            {"type": "ContainersReady", "status": str(ready_now)},
                            {"type": "Ready", "status": str(ready_now)},
                        ],
                        "containerStatuses": [
                            {
                                "name": c["name"],
                                "image": c.get("image", ""),
                                "imageID": _image_id(c.get("image", "")),
                                "containerID": "containerd://"
                                + random_suffix(self.cluster.rng, 64),
                                "ready": ready_now,
                                "started": True,
                                "restartCount": 0,
                                "state": {"running": {"startedAt": _now()}},
                            }
                            for c in containers
                        ],
                    }
                },
            )
            if deployment:
                await self._update_status(ns, deployment)
        if not ready_now:
            await asyncio.sleep(max(d or 0 for d in delays))
            await self._kubelet_mark_ready(ns, pod, uid)
        if deployment:
            await self._reconcile(ns, deployment)  # the controllers watch pods turn Ready

    async def _kubelet_mark_ready(self, ns: str, pod: str, uid: Any) -> None:
        """The readiness prober's first success."""
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None or obj["metadata"].get("uid") != uid or _is_terminating(obj):
                return
            statuses = obj.get("status", {}).get("containerStatuses", [])
            for s in statuses:
                s["ready"] = True
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "containerStatuses": statuses,
                        "conditions": [
                            {"type": "PodScheduled", "status": "True"},
                            {"type": "Initialized", "status": "True"},
                            {"type": "ContainersReady", "status": "True"},
                            {"type": "Ready", "status": "True"},
                        ],
                    }
                },
            )

    async def _kubelet_start_ephemeral(self, ns: str, pod: str) -> None:
        """Ephemeral containers: pulled from the node's images, or ErrImagePull and then
        ImagePullBackOff when the image is neither on the node nor pullable."""
        await asyncio.sleep(KUBELET_STARTUP_S)
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None:
                return
            known = {
                s["name"]: s for s in obj.get("status", {}).get("ephemeralContainerStatuses") or []
            }
            statuses, failed = [], []
            for c in obj["spec"].get("ephemeralContainers", []):
                if c["name"] in known:
                    statuses.append(known[c["name"]])
                elif c.get("image") in self.cluster.unpullable_images:
                    failed.append(c)
                    statuses.append(
                        {
                            "name": c["name"],
                            "image": c.get("image"),
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "waiting": {
                                    "reason": "ErrImagePull",
                                    "message": _pull_error(str(c.get("image"))),
                                }
                            },
                        }
                    )
                else:
                    statuses.append(
                        {
                            "name": c["name"],
                            "image": c.get("image"),
                            "imageID": _image_id(str(c.get("image"))),
                            "containerID": "containerd://" + random_suffix(self.cluster.rng, 64),
                            "ready": False,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": _now()}},
                        }
                    )
            await self._patch(PODS, ns, pod, {"status": {"ephemeralContainerStatuses": statuses}})
        if failed:
            await asyncio.sleep(KUBELET_STARTUP_S)
            async with self._lock:
                obj = self._get(PODS, ns, pod)
                if obj is None:
                    return
                statuses = obj.get("status", {}).get("ephemeralContainerStatuses") or []
                for s in statuses:
                    if s["name"] in {c["name"] for c in failed}:
                        s["state"] = {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{s.get("image")}"',
                            }
                        }
                await self._patch(
                    PODS, ns, pod, {"status": {"ephemeralContainerStatuses": statuses}}
                )

    async def _kubelet_restart_container(self, ns: str, pod: str) -> None:
        """PID 1 died: the kubelet restarts the container (restartCount+1, NotReady), the
        readiness probe passes again after its period."""
        async with self._lock:
            obj = self._get(PODS, ns, pod)
            if obj is None:
                return
            uid = obj["metadata"].get("uid")
            statuses = obj.get("status", {}).get("containerStatuses", [])
            for s in statuses:
                s["restartCount"] = int(s.get("restartCount", 0)) + 1
                s["ready"] = False
                s["lastState"] = {"terminated": {"exitCode": 143, "reason": "Error"}}
                s["state"] = {"running": {"startedAt": _now()}}
            await self._patch(
                PODS,
                ns,
                pod,
                {
                    "status": {
                        "containerStatuses": statuses,
                        "conditions": [{"type": "Ready", "status": "False"}],
                    }
                },
            )
            delays = [_probe_delay(c) for c in obj.get("spec", {}).get("containers", [])]
        await asyncio.sleep(KUBELET_STARTUP_S + max((d or 0 for d in delays), default=0))
        await self._kubelet_mark_ready(ns, pod, uid)

    # -------------------------------------------------------------------- exec

    async def _serve_exec(self, request: Any) -> aiohttp.web.StreamResponse:
        """The exec subresource: the API server's checks, then the kubelet's websocket."""
        raw = request._raw_request
        argv = raw.query.getall("command", [])
        container = raw.query.get("container")
        async with self._lock:
            pod = self._get(PODS, request.namespace, request.name)
        if pod is None:
            return await self._render_error(kmock.KubernetesObjectNotFoundError())
        spec = pod.get("spec", {})
        regular = {c["name"]: c for c in spec.get("containers", [])}
        ephemeral = {c["name"]: c for c in spec.get("ephemeralContainers", [])}
        if container and container not in regular | ephemeral:
            return await self._render_error(  # pkg/registry/core/pod/strategy.go
                kmock.KubernetesError(
                    status=400,
                    reason="BadRequest",
                    message=f"container {container} is not valid for pod {request.name}",
                )
            )
        if not spec.get("nodeName"):  # strategy.go streamLocation: no node, no kubelet
            return await self._render_error(
                kmock.KubernetesError(
                    status=400,
                    reason="BadRequest",
                    message=f"pod {request.name} does not have a host assigned",
                )
            )
        chosen = (regular | ephemeral).get(container or "") or next(iter(regular.values()), {})
        # The kubelet's GetExec finds the container among the *running* ones (kubelet.go
        # findContainer): a container waiting in CrashLoopBackOff cannot be exec'd into.
        # An ephemeral one counts only once started; a regular one without a status yet
        # is taken as running (the fixtures' pods).
        status_key = "ephemeralContainerStatuses" if container in ephemeral else "containerStatuses"
        states = {
            s["name"]: s.get("state") or {} for s in pod.get("status", {}).get(status_key) or []
        }
        name = container or chosen.get("name", "")
        if (container in ephemeral or name in states) and "running" not in states.get(name, {}):
            return await self._render_error(  # the kubelet: no such running container
                kmock.KubernetesError(
                    status=500,
                    reason="InternalError",
                    message=f'unable to upgrade connection: container not found ("{name}")',
                )
            )
        key = (request.namespace, request.name)
        self.cluster.exec_log.append((request.namespace, request.name, container, list(argv)))
        binaries = self.cluster.image_binaries.get(chosen.get("image", ""))
        missing = bool(argv) and binaries is not None and argv[0].rsplit("/", 1)[-1] not in binaries
        code, out, err = (
            (0, "", "")
            if missing
            else (
                _kill_all_reply(spec, argv)
                or self._exec_reply(request.namespace, request.name, argv)
            )
        )
        model = self.cluster.containers.setdefault(key, ContainerModel())
        if code == 0 and not missing:
            await self._apply_exec(request.namespace, request.name, argv, model)
        ws = aiohttp.web.WebSocketResponse(protocols=["v4.channel.k8s.io"])
        await ws.prepare(raw)
        if out:
            await ws.send_bytes(b"\x01" + out.encode())
        if err:
            await ws.send_bytes(b"\x02" + err.encode())
        status: dict[str, Any]
        if missing:  # remotecommand: a runtime error is an InternalError Status, no exit code
            cause = (
                "failed to exec in container: failed to start exec "
                f'"{random_suffix(self.cluster.rng, 12)}": '
                f"OCI runtime exec failed: exec failed: unable to start container process: "
                f'exec: "{argv[0]}": executable file not found in $PATH: unknown'
            )
            status = {
                "metadata": {},
                "status": "Failure",
                "message": "Internal error occurred: error executing command in container: "
                + cause,
                "reason": "InternalError",
                "details": {
                    "causes": [{"message": f"error executing command in container: {cause}"}]
                },
                "code": 500,
            }
        elif code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "message": f"command terminated with non-zero exit code: exit status {code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    def _exec_reply(self, ns: str, pod: str, argv: list[str]) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of a command exec'd in a pod: the test's canned replies."""
        return self.cluster.exec_reply(argv)

    async def _apply_exec(self, ns: str, pod: str, argv: list[str], model: ContainerModel) -> None:
        """A model of the fault commands' effects; nothing runs on this machine."""
        script = argv[2] if argv[:2] == ["sh", "-c"] else " ".join(argv)
        if re.fullmatch(r"\s*kill -(\w+) -1\s*", script):  # an init's children: the app
            self.cluster.spawn(self._kubelet_restart_container(ns, pod))
            return
        kill = re.fullmatch(r"\s*kill -(\w+) 1\s*", script)
        if kill:
            # pid_namespaces(7): PID 1 gets only the signals it has a handler for when
            # they come from inside its namespace; SIGKILL and SIGSTOP never. The demo app
            # (aiohttp) handles SIGTERM/SIGINT and exits: the kubelet restarts it.
            sig = signal.Signals["SIG" + kill.group(1).removeprefix("SIG")]
            if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
                self.cluster.spawn(self._kubelet_restart_container(ns, pod))
            return
        for hook, chain in re.findall(r"iptables -I (INPUT|OUTPUT) -j (\S+)", script):
            model.hooks.add(f"{hook} {chain}")
        for hook, chain in re.findall(r"iptables -D (INPUT|OUTPUT) -j (\S+)", script):
            model.hooks.discard(f"{hook} {chain}")
        for size, path in re.findall(r"fallocate -l (\d+)M (\S+)", script):
            model.files[path.strip("'")] = int(size)
        for path in re.findall(r"echo \$! > (\S+)", script):
            model.files[path] = 0
        for path in re.findall(r"rm -f (\S+)", script):
            model.files.pop(path.strip("';"), None)

    # ----------------------------------------------------- pod proxy and log

    async def _serve_pod_proxy(
        self, request: Any, method: str, path: str
    ) -> aiohttp.web.StreamResponse:
        """The pod proxy subresource (pkg/registry/core/pod/rest/subresources.go ProxyREST,
        strategy.go ResourceLocation): ``NAME[:PORT]`` or ``scheme:NAME:PORT``; without a
        port, the first declared container port; the port is joined to the pod IP as
        given (a named port is NOT resolved for pods: the dial fails, 503); a pod without
        an IP is 400 "address not allowed"; the pod's own answer passes through with its
        status. The pod's side is ``EmulatedCluster.pod_http`` (nothing listens here)."""
        parts = str(request.name).split(":")
        if len(parts) == 3:
            parts = parts[1:]
        name, port = parts[0], (parts[1] if len(parts) > 1 else "")
        async with self._lock:
            pod = self._get(PODS, request.namespace, name)
        if pod is None:
            return await self._render_error(kmock.KubernetesObjectNotFoundError())
        if not port:
            port = next(
                (
                    str(p["containerPort"])
                    for c in pod.get("spec", {}).get("containers", [])
                    for p in c.get("ports") or ()
                ),
                "",
            )
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            return await self._render_error(
                kmock.KubernetesError(
                    status=400, reason="BadRequest", message="address not allowed"
                )
            )
        where = f"{ip}:{port}" if port else ip
        reply = self.cluster.pod_http.get(
            (method, name, port, path or "/")
        ) or self.cluster.pod_http.get((method, "*", port, path or "/"))
        if not port.isdigit() or reply is None:
            why = "unknown port" if port and not port.isdigit() else "connect: connection refused"
            return await self._render_error(  # UpgradeAwareProxyHandler: the dial failed
                kmock.KubernetesError(
                    status=503,
                    reason="ServiceUnavailable",
                    message=f"error trying to reach service: dial tcp {where}: {why}",
                )
            )
        status, body = reply
        return aiohttp.web.Response(status=status, text=body, content_type="text/plain")

    async def _serve_log(self, request: Any) -> aiohttp.web.StreamResponse:
        """The log subresource (pkg/registry/core/pod/rest/log.go, strategy.go
        LogLocation): a pod of several containers needs ``container`` (400 naming them);
        ``tailLines`` keeps the last N lines (the kubelet's tail). The text is
        ``EmulatedCluster.pod_logs``."""
        query = request._raw_request.query
        async with self._lock:
            pod = self._get(PODS, request.namespace, request.name)
        if pod is None:
            return await self._render_error(kmock.KubernetesObjectNotFoundError())
        names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
        container = query.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            return await self._render_error(
                kmock.KubernetesError(
                    status=400,
                    reason="BadRequest",
                    message=f"a container name must be specified for pod {request.name}, "
                    f"choose one of: [{' '.join(names)}]",
                )
            )
        text = self.cluster.pod_logs.get((request.namespace, request.name, container), "")
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]) :])
        return aiohttp.web.Response(text=text, content_type="text/plain")

    # --------------------------------------------------------------- Eviction

    async def _serve_eviction(self, request: Any) -> aiohttp.web.StreamResponse:
        """The Eviction API: honour PodDisruptionBudgets, then delete gracefully."""
        ns, name = request.namespace, request.name
        async with self._lock:
            pod = self._get(PODS, ns, name)
            if pod is None:
                return await self._render_error(kmock.KubernetesObjectNotFoundError())
            labels = pod["metadata"].get("labels", {})
            # eviction.go canIgnorePDB: a terminating or unscheduled pod goes without a check
            check = not _is_terminating(pod) and pod.get("status", {}).get("phase") == "Running"
            for pdb in self._items(PDBS, ns) if check else ():
                sel = pdb["spec"].get("selector", {}).get("matchLabels", {})
                if not all(labels.get(k) == v for k, v in sel.items()):
                    continue
                matching = [
                    p
                    for p in self._items(PODS, ns)
                    if _active(p)
                    and all(p["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())
                ]
                healthy = sum(1 for p in matching if _is_ready(p))
                if "minAvailable" in pdb["spec"]:
                    allowed = healthy - int(pdb["spec"]["minAvailable"])
                else:
                    allowed = healthy - (len(matching) - int(pdb["spec"].get("maxUnavailable", 1)))
                if allowed < 1:
                    self.cluster.evictions_refused += 1
                    return await self._render_error(
                        kmock.KubernetesError(
                            status=429,
                            reason="TooManyRequests",
                            message="Cannot evict pod as it would violate the pod's "
                            "disruption budget.",
                        )
                    )
            await self._graceful_delete(pod, None)
        return aiohttp.web.json_response(
            {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}, status=201
        )


@dataclass
class Request:
    method: str
    path: str
    subresource: str | None
    query: dict[str, str]


class EmulatedCluster:
    """The emulator on a free port, in a background event loop thread."""

    #: the emulator served (kube_kubelet.py puts a process-running kubelet in it)
    emulator_class: type[ClusterEmulator] = ClusterEmulator

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host  # 0.0.0.0: reachable on this machine's other addresses too
        self.exec_log: list[tuple[str, str, str | None, list[str]]] = []
        self.exec_replies: list[tuple[Callable[[list[str]], bool], tuple[int, str, str]]] = []
        self.containers: dict[tuple[str, str], ContainerModel] = {}
        self.forbidden: list[tuple[str, str, str | None, str]] = []
        self.refuse_ephemeral = False
        #: plural -> how the next watch of it ends: "end" (server timeout at once), "410"
        #: (ERROR Expired at once), "http410" (the request answered 410) or "hang" (a dead
        #: TCP connection: no byte, no FIN)
        self.expire_watches: dict[str, str] = {}
        #: plurals whose next list never answers (a connection dead mid-request)
        self.hang_lists: set[str] = set()
        self.evictions_refused = 0
        self.serial = 0
        self.pod_age_offset_s = 0.0
        self.rng = random.Random()
        self.history = History()
        self.watch_options = WatchOptions()
        self.termination_s = 0.05  # the emulated app's exit after SIGTERM, within its grace
        #: image -> its executables (exec of anything else: "executable file not found")
        self.image_binaries: dict[str, frozenset[str]] = {}
        #: images no node has and no registry serves (ErrImagePull)
        self.unpullable_images: set[str] = set()
        #: what pods answer over the pod proxy: (method, pod name or "*", port, path) ->
        #: (status, body); anything else is a refused connection (503)
        self.pod_http: dict[tuple[str, str, str, str], tuple[int, str]] = {}
        #: (namespace, pod, container) -> the container's log (the log subresource)
        self.pod_logs: dict[tuple[str, str, str], str] = {}
        #: the HPA stand-in: its sync period and metric window (15 s each in a cluster,
        #: scaled), and what metrics-server would report: (namespace, pod) -> milli-CPU
        self.hpa_sync_s = 15 * TIME_SCALE
        self.hpa_window_s = 15 * TIME_SCALE
        self.pod_cpu_m: dict[tuple[str, str], int] = {}
        self.hpa_decisions: list[tuple[str, int, int]] = []  # (hpa, from, to)
        self._cpu_readings: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._main, daemon=True, name="kmock")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.emu: ClusterEmulator | None = None
        self.url = ""

    # lifecycle
    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with self.emulator_class() as emu, kmock.Server(emu, host=self.host) as server:
            emu.cluster = self
            self.history.changed = asyncio.Condition()
            emu._buses = _Buses(self.history)  # type: ignore[assignment]
            for res in (PODS, NODES, SERVICES, DEPLOYMENTS, REPLICASETS, PDBS, NETPOLS, PVCS, HPAS):
                emu.resources[res] = kmock.ResourceInfo()  # empty kinds list as [], not 404
            self.emu, self.url = emu, str(server.url).rstrip("/")
            self.spawn(emu._hpa_controller())
            self._ready.set()
            await self._stop.wait()
            for task in list(self._tasks):
                task.cancel()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def run(self, coro: Any, timeout: float = 10) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def pod_usage_m(self, ns: str, pod: str) -> int | None:
        """metrics-server's CPU of a pod (milli-cores over the window); None: no metric.

        What a test set in ``pod_cpu_m``; else, where the kubelet runs pods as processes
        (kube_kubelet.py), their real CPU time as a rate over the window, a pod
        seen for less than one window having none yet (as in metrics-server)."""
        if (ns, pod) in self.pod_cpu_m:
            return self.pod_cpu_m[(ns, pod)]
        runtime = getattr(self.emu, "runtime", None) or {}
        ctx = next((c for c in runtime.values() if (c.ns, c.name) == (ns, pod)), None)
        if ctx is None:
            return None
        total = 0.0
        for container in ctx.containers.values():
            if container.proc is None:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(container.proc.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
        at = time.time()
        readings = self._cpu_readings.setdefault((ns, pod), [])
        readings.append((at, total))
        old = [r for r in readings if r[0] <= at - self.hpa_window_s]
        del readings[: max(0, len(old) - 1)]
        if not old:
            return None
        then_at, then = old[-1]
        return max(0, round((total - then) / (at - then_at) * 1000))

    # test-facing helpers
    def kubeconfig(
        self,
        tmp_path: Path,
        *,
        context: str = "kind-test",
        namespace: str = "chaos-demo",
        server: str | None = None,
    ) -> Path:
        """A kubeconfig for this emulator; ``server`` overrides the URL (another address)."""
        path = tmp_path / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emu", "cluster": {"server": server or self.url}}],
                    "users": [{"name": "emu", "user": {"token": "test-token"}}],
                    "contexts": [
                        {
                            "name": context,
                            "context": {"cluster": "emu", "user": "emu", "namespace": namespace},
                        }
                    ],
                    "current-context": context,
                }
            )
        )
        return path

    def canned_reply(self, argv: list[str]) -> tuple[int, str, str] | None:
        """The test's reply for ``argv`` (``exec_replies``), if it set one."""
        return next((reply for matches, reply in self.exec_replies if matches(argv)), None)

    def exec_reply(self, argv: list[str]) -> tuple[int, str, str]:
        return self.canned_reply(argv) or (0, "", "")

    def forbid(self, method: str, plural: str, subresource: str | None = None) -> None:
        """RBAC: answer 403 to this verb on this resource, as the API server would."""
        self.forbidden.append(
            (
                method.upper(),
                plural,
                subresource,
                (
                    f'{plural} is forbidden: User "system:serviceaccount:ci:chaos" cannot '
                    f'{method.lower()} resource "{plural}" in API group "" '
                    'in the namespace "chaos-demo"'
                ),
            )
        )

    def requests(self) -> list[Request]:
        assert self.emu is not None
        return [
            Request(str(r.method.value).upper(), r.url.path, r.subresource, dict(r.params))
            for r in list(self.emu)
        ]

    def mutating_requests(self) -> list[Request]:
        return [r for r in self.requests() if r.method != "GET" or r.subresource == "exec"]

    def obj(self, res: Any, ns: str | None, name: str) -> dict[str, Any] | None:
        async def get() -> Any:
            assert self.emu is not None
            async with self.emu._lock:
                return self.emu._get(res, ns, name)

        return self.run(get())

    def items(self, res: Any, ns: str | None) -> list[dict[str, Any]]:
        async def get() -> Any:
            assert self.emu is not None
            async with self.emu._lock:
                return json.loads(json.dumps(self.emu._items(res, ns)))

        return self.run(get())

    def add(self, res: Any, ns: str | None, body: dict[str, Any]) -> None:
        async def put() -> None:
            assert self.emu is not None
            async with self.emu._lock:
                await self.emu._create(res, ns, body)

        self.run(put())

    def seed(
        self,
        *,
        namespace: str = "chaos-demo",
        deployment: str = "api",
        replicas: int = 3,
        nodes: tuple[str, ...] = ("worker-1", "worker-2", "worker-3"),
        filler: int = 0,
    ) -> None:
        """Nodes, a Deployment whose pods are Ready, and ``filler`` unrelated pods."""
        for i, node in enumerate(nodes):
            self.add(
                NODES,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": node},
                    "spec": {},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": f"172.18.0.{i + 2}"}],
                    },
                },
            )
        labels = {"app": deployment}
        self.add(
            DEPLOYMENTS,
            namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": deployment,
                    "namespace": namespace,
                    "uid": f"uid-dep-{deployment}",
                    "generation": 1,
                    "labels": labels,
                },
                "spec": {  # as deploy/k8s/api.yaml: surge 1, a readiness probe every 2 s
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
                    },
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "terminationGracePeriodSeconds": 10,
                            "containers": [
                                {
                                    "name": "api",
                                    "image": "chaos-demo:v1",
                                    "readinessProbe": {
                                        "httpGet": {"path": "/readyz", "port": 8080},
                                        "periodSeconds": 2,
                                    },
                                }
                            ],
                        },
                    },
                },
            },
        )
        for i in range(filler):
            self.add(
                PODS,
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"filler-{i:04d}",
                        "namespace": namespace,
                        "labels": {"app": "filler"},
                        "creationTimestamp": _now(-3600),
                    },
                    "spec": {
                        "nodeName": nodes[i % len(nodes)],
                        "containers": [{"name": "c", "image": "x"}],
                    },
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                },
            )
        self.pod_age_offset_s = -3600  # seeded pods are old: replacements are recognisably new
        assert self.emu is not None
        self.run(self.emu._reconcile(namespace, deployment))
        self.eventually(
            lambda: (
                (self.obj(DEPLOYMENTS, namespace, deployment) or {})
                .get("status", {})
                .get("readyReplicas")
                == replicas
            )
        )
        self.pod_age_offset_s = 0.0

    def eventually(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``check`` until truthy, with a deadline (the emulator changes state async)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s: {check}")
            time.sleep(0.01)

    def pods_of(self, ns: str, app: str, *, terminating: bool = False) -> Iterator[dict[str, Any]]:
        """Pods labelled app=APP; Terminating ones (deletionTimestamp set) only if asked."""
        return (
            p
            for p in self.items(PODS, ns)
            if p["metadata"].get("labels", {}).get("app") == app
            and (terminating or not _is_terminating(p))
        )

    def compact(self) -> None:
        """etcd compaction: a watch from any resourceVersion so far now gets 410 Gone."""

        async def go() -> None:
            self.history.compact()

        self.run(go())
