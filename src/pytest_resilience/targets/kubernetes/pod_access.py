"""Reaching a pod's HTTP endpoints and log from outside the cluster, via the API server.

A CI runner cannot route to pod IPs, so metrics (:class:`~..base.PodMetrics`), admin hooks
(:class:`~..base.PodAdmin`) and the log (:class:`~..base.PodLogs`) go through the API
server with the kubeconfig's credentials: the pod proxy subresource
``/api/v1/namespaces/NS/pods/NAME:PORT/proxy/PATH`` (ProxyREST, RBAC ``pods/proxy``) and
the log subresource (``pods/log``, ``tailLines``).

The real API server joins the port of ``NAME:PORT`` to the pod IP as given
(pkg/registry/core/pod/strategy.go ResourceLocation): a *named* port is not resolved for
pods and the dial fails, so the number is found here, from the pod object the listing
already returned (no extra request):

- metrics: the ``prometheus.io/port`` annotation (deploy/k8s/api.yaml declares it), else
  the container port named ``metrics``, else ``http``; a pod with
  ``prometheus.io/scrape: "false"`` or none of these serves no metrics;
- admin hooks: the ``pytest-resilience/admin-port`` annotation, else the container port
  named ``admin``, else ``http``, else the first declared container port.

Cost, per probe interval: the probes' one pod listing, then one proxied GET per pod;
an admin hook is one proxied POST; a log tail is one GET. A pod the listing never
returned (a :class:`~..base.Pod` built elsewhere) costs one pod read, once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from ...errors import TargetError
from ..base import Pod
from .api import KubeApiError, call, translate
from .calls import KubeCalls

__all__ = ["ADMIN_PORT_ANNOTATION", "METRICS_PORT_ANNOTATION", "KubePodAccess", "PodPorts"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

METRICS_PORT_ANNOTATION = "prometheus.io/port"
SCRAPE_ANNOTATION = "prometheus.io/scrape"
ADMIN_PORT_ANNOTATION = "pytest-resilience/admin-port"


@dataclass(frozen=True)
class PodPorts:
    """What reaching one pod needs, read from its object once."""

    metrics: int | None
    admin: int | None
    container: str | None  # the first container: whose log ``log_tail`` reads
    declared: tuple[str, ...] = ()  # "name:number" of its container ports, for errors

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> PodPorts:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        annotations = meta.get("annotations") or {}
        containers = spec.get("containers") or ()
        named: dict[str, int] = {}
        numbers: list[int] = []
        for c in containers:
            for p in c.get("ports") or ():
                if p.get("containerPort"):
                    numbers.append(int(p["containerPort"]))
                    if p.get("name"):
                        named.setdefault(str(p["name"]), int(p["containerPort"]))
        metrics = _port(annotations.get(METRICS_PORT_ANNOTATION))
        if metrics is None:
            metrics = named.get("metrics") or named.get("http")
        if str(annotations.get(SCRAPE_ANNOTATION, "")).lower() == "false":
            metrics = None
        admin = _port(annotations.get(ADMIN_PORT_ANNOTATION))
        if admin is None:
            admin = named.get("admin") or named.get("http") or (numbers[0] if numbers else None)
        declared = tuple(f"{n}:{v}" for n, v in named.items()) or tuple(map(str, numbers))
        first = containers[0].get("name") if containers else None
        return cls(metrics, admin, first, declared)


class KubePodAccess(KubeCalls):
    """PodMetrics, PodAdmin and PodLogs of :class:`~.target.KubernetesTarget`."""

    #: (namespace, pod) -> its ports, from the listings (set up by the target's __init__)
    _ports: dict[tuple[str, str], PodPorts]
    _ports_lock: threading.Lock

    def _remember(self, obj: Mapping[str, Any]) -> None:
        """Keep the ports of a listed pod (called by ``pods()`` for every object)."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._ports_lock:
            self._ports[key] = PodPorts.of(obj)

    def _forget_gone(self, namespace: str, names: set[str], selector_was_empty: bool) -> None:
        """A full listing of a namespace drops the pods no longer in it (bounded cache)."""
        if not selector_was_empty:
            return
        with self._ports_lock:
            for key in [k for k in self._ports if k[0] == namespace and k[1] not in names]:
                del self._ports[key]

    def _ports_of(self, pod: Pod) -> PodPorts:
        with self._ports_lock:
            known = self._ports.get((pod.namespace, pod.name))
        if known is not None:
            return known
        obj = self._read_pod(pod.name, pod.namespace)
        self._remember(obj)
        return PodPorts.of(obj)

    # ----------------------------------------------------------------- PodMetrics

    def scrape_pod(self, pod: Pod, *, timeout: float) -> str | None:
        """:class:`~..base.PodMetrics`: GET /metrics through the pod proxy; None for a pod
        that declares no metrics port, is gone, or does not answer 2xx."""
        try:
            port = self._ports_of(pod).metrics
            if port is None:
                return None
            status, body = self._proxy("GET", pod, port, "/metrics", timeout=timeout)
        except TargetError:
            return None
        return body.decode("utf-8", errors="replace") if 200 <= status < 300 else None

    def metrics_address(self, pod: Pod) -> str | None:
        """None: a Prometheus on this machine cannot reach pod IPs (the in-cluster
        Prometheus scrapes them by the ``prometheus.io/*`` annotations)."""
        return None

    # ------------------------------------------------------------------- PodAdmin

    def post_admin(self, pod: Pod, path: str, *, timeout: float) -> bytes:
        """:class:`~..base.PodAdmin`: POST ``path`` (query kept) through the pod proxy."""
        self.policy.check_namespace(pod.namespace)
        ports = self._ports_of(pod)
        if ports.admin is None:
            raise TargetError(
                f"pod {pod.namespace}/{pod.name} declares no port for admin hooks: add a "
                f"container port (named 'admin' or 'http') or the annotation "
                f"{ADMIN_PORT_ANNOTATION}: '<port>' to its template"
            )
        where = f"pod {pod.namespace}/{pod.name}:{ports.admin}"
        if self._dry(f"POST {where} {path} (pod proxy)"):
            return b""
        status, body = self._proxy("POST", pod, ports.admin, path, timeout=timeout)
        if not 200 <= status < 300:
            text = body.decode("utf-8", errors="replace").strip()[:300]
            raise TargetError(f"{where}: POST {path} answered {status}: {text}")
        return body

    # -------------------------------------------------------------------- PodLogs

    def log_tail(self, pod: Pod, *, lines: int = 3) -> str:
        """:class:`~..base.PodLogs`: the last ``lines`` of its (first) container's log,
        joined by " | "; empty when the pod or its log is gone (for error messages)."""
        kwargs: dict[str, Any] = {"tail_lines": max(int(lines), 1)}
        try:
            container = self._ports_of(pod).container
            if container:
                kwargs["container"] = container
            resp = call(
                self._core.read_namespaced_pod_log,
                pod.name,
                pod.namespace,
                verb="get",
                resource="pods/log",
                namespace=pod.namespace,
                name=pod.name,
                _preload_content=False,
                _request_timeout=10,
                **kwargs,
            )
        except TargetError:
            return ""
        text = (resp.data or b"").decode("utf-8", errors="replace")
        return " | ".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------- plumbing

    def _proxy(
        self, method: str, pod: Pod, port: int, path: str, *, timeout: float
    ) -> tuple[int, bytes]:
        """One request through the pod proxy: (the pod's status, its body). The API
        server's own refusals (no pod, RBAC, the dial failed: 503) come back as
        :class:`~.api.KubeApiError` with its message."""
        split = urlsplit(path)
        resource = (
            f"/api/v1/namespaces/{quote(pod.namespace, safe='')}/pods/"
            f"{quote(pod.name, safe='')}:{int(port)}/proxy/"
            f"{quote(split.path.lstrip('/'), safe='/')}"
        )
        request = self._client.param_serialize(
            method=method,
            resource_path=resource,
            query_params=parse_qsl(split.query),
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        fields = dict(verb=method.lower(), resource="pods/proxy", namespace=pod.namespace)
        resp = call(self._client.call_api, *request, _request_timeout=timeout, **fields)
        body = resp.read() or b""
        if resp.status >= 400 and _is_status(resp):
            raise _refusal(resp.status, body, name=f"{pod.name}:{port}{split.path}", **fields)
        return int(resp.status), bytes(body)


def _port(value: Any) -> int | None:
    try:
        port = int(str(value))
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _is_status(resp: Any) -> bool:
    """The API server's own answer (a metav1.Status), not the pod's."""
    try:
        return bool(json.loads(resp.data or b"{}").get("kind") == "Status")
    except (ValueError, AttributeError):
        return False


def _refusal(status: int, body: bytes, **fields: Any) -> KubeApiError:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason="")
    exc.body = body.decode("utf-8", errors="replace")
    return translate(exc, **fields)
