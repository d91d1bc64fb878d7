"""Locust workers as a Deployment in the cluster, dialing the master in the pytest process.

``load(workers=N)`` on Kubernetes puts the load where the system under load is: N pods of
the Deployment of deploy/k8s/load/locust-workers.yaml (:func:`worker_deployment` builds
the same object, with the run's arguments), each ``python -m
pytest_resilience._locust_driver --role worker`` of the demo image, which ships the package
and its locustfile. They reach the workload through its Service (:meth:`load_endpoint`) and
the master through :meth:`load_master_address`: this machine's address on its route to the
cluster's nodes (kind's nodes are containers on a Docker bridge; the host is that bridge's
gateway), which the master binds, so nothing but the workers can dial it from outside. The
master stays here because the run's stream (one sample per second, the timeline) is read
here; only the workers, the part that needs cores, move.

``PYTEST_RESILIENCE_LOAD_MASTER_HOST`` overrides the address (a runner behind NAT, a
cluster that cannot route back to it), ``PYTEST_RESILIENCE_LOAD_WORKER_IMAGE`` the image.
A Deployment of that name left by a killed session is taken over (patched), not refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import TargetError
from .api import KubeConflict, KubeNotFound
from .calls import KubeCalls

__all__ = [
    "DEFAULT_IMAGE",
    "DEPLOYMENT",
    "IMAGE_ENV",
    "MASTER_HOST_ENV",
    "KubeLoadWorkers",
    "PlacedDeployment",
    "worker_deployment",
]

DEPLOYMENT = "locust-workers"
DEFAULT_IMAGE = "pytest-resilience-demo:ci"  # deploy/Dockerfile.demo, loaded by the workflow
IMAGE_ENV = "PYTEST_RESILIENCE_LOAD_WORKER_IMAGE"
MASTER_HOST_ENV = "PYTEST_RESILIENCE_LOAD_MASTER_HOST"
LABELS = {
    "app": DEPLOYMENT,
    "app.kubernetes.io/component": "load",
    "app.kubernetes.io/managed-by": "pytest-resilience",
}
_DRIVER = ["python", "-m", "pytest_resilience._locust_driver"]

Obj = dict[str, Any]


def worker_deployment(namespace: str, args: Sequence[str], *, replicas: int, image: str) -> Obj:
    """The workers' Deployment: deploy/k8s/load/locust-workers.yaml with ``args`` and
    ``replicas`` (a test holds the two to each other)."""
    container: Obj = {
        "name": "locust-worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(_DRIVER),
        "args": list(args),
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        # one Locust worker is one gevent loop: it uses one core at most
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace, "labels": dict(LABELS)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    # the master collects a worker's last second within 5 s of its SIGTERM
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                },
            },
        },
    }


@dataclass(frozen=True)
class PlacedDeployment:
    """:class:`~..base.PlacedWorkers`: the workers' Deployment of one load run."""

    namespace: str
    deployment: str
    _describe: Callable[[], str]
    _remove: Callable[[], None]

    @property
    def name(self) -> str:
        return f"deployment {self.namespace}/{self.deployment}"

    def describe(self) -> str:
        return self._describe()

    def remove(self) -> None:
        self._remove()


class KubeLoadWorkers(KubeCalls):
    """The LoadWorkers capability of :class:`~.target.KubernetesTarget` (a mixin)."""

    def load_master_address(self) -> str:
        """``$PYTEST_RESILIENCE_LOAD_MASTER_HOST``, or this machine's source address on its
        route to the first node's InternalIP (no packet is sent: a UDP socket's connect
        only picks the route)."""
        if os.environ.get(MASTER_HOST_ENV):
            return os.environ[MASTER_HOST_ENV]
        nodes = self._read(self._core.list_node, verb="list", resource="nodes")["items"]
        for node in nodes:
            for addr in node.get("status", {}).get("addresses") or ():
                if addr.get("type") != "InternalIP":
                    continue
                with (
                    contextlib.suppress(OSError),
                    socket.socket(
                        socket.AF_INET6 if ":" in addr["address"] else socket.AF_INET,
                        socket.SOCK_DGRAM,
                    ) as probe,
                ):
                    probe.connect((addr["address"], 9))
                    return str(probe.getsockname()[0])
        raise TargetError(
            "no route from this machine to any node's InternalIP, so in-cluster load workers "
            f"could not reach the Locust master here; set {MASTER_HOST_ENV} to an address of "
            "this machine the pods can connect to, or run the load here (workers=1)"
        )

    def load_endpoint(self, workload: str) -> str:
        """The workload's Service by cluster DNS, its first port."""
        svc = self._read(
            self._core.read_namespaced_service,
            workload,
            self.namespace,
            verb="get",
            resource="services",
            namespace=self.namespace,
            name=workload,
        )
        ports = svc.get("spec", {}).get("ports") or [{}]
        port = ports[0].get("port", 80)
        return f"http://{workload}.{self.namespace}.svc.cluster.local:{port}"

    def place_load_workers(self, args: Sequence[str], *, replicas: int) -> PlacedDeployment:
        """Create the Deployment (or take over one left behind) with ``replicas`` pods."""
        image = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        body = worker_deployment(self.namespace, args, replicas=replicas, image=image)
        where = f"{self.namespace}/{DEPLOYMENT}"
        common: Obj = {
            "verb": "create",
            "resource": "deployments",
            "namespace": self.namespace,
            "name": DEPLOYMENT,
        }
        try:
            self._change(
                f"CREATE deployment {where}",
                self._apps.create_namespaced_deployment,
                self.namespace,
                body,
                **common,
            )
        except KubeConflict:  # left by a session that was killed: ours, with this run's args
            self._change(
                f"PATCH deployment {where}",
                self._apps.patch_namespaced_deployment,
                DEPLOYMENT,
                self.namespace,
                {"metadata": {"labels": LABELS}, "spec": body["spec"]},
                **{**common, "verb": "patch"},
            )
        return PlacedDeployment(
            self.namespace, DEPLOYMENT, self._describe_workers, self._remove_workers
        )

    def _describe_workers(self) -> str:
        try:
            pods = self._read(
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=f"app={DEPLOYMENT}",
                verb="list",
                resource="pods",
                namespace=self.namespace,
            )["items"]
        except TargetError as exc:
            return f"its pods could not be listed ({exc})"
        if not pods:
            return (
                "no pod of it exists yet (`kubectl describe deployment "
                f"{DEPLOYMENT}` says why the ReplicaSet made none)"
            )
        return "; ".join(_pod_state(p) for p in pods)

    def _remove_workers(self) -> None:
        with contextlib.suppress(KubeNotFound):
            self._change(
                f"DELETE deployment {self.namespace}/{DEPLOYMENT}",
                self._apps.delete_namespaced_deployment,
                DEPLOYMENT,
                self.namespace,
                propagation_policy="Background",  # its ReplicaSet and pods with it
                grace_period_seconds=5,
                verb="delete",
                resource="deployments",
                namespace=self.namespace,
                name=DEPLOYMENT,
            )


def _pod_state(pod: Obj) -> str:
    """``locust-workers-7d9f-x2p: Pending (ErrImagePull: ...)``: what ``kubectl get pods``
    and ``describe`` would say first."""
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status", {})
    why = ""
    for c in status.get("containerStatuses") or ():
        state = c.get("state") or {}
        for kind in ("waiting", "terminated"):
            if state.get(kind):
                detail = state[kind]
                why = f"{detail.get('reason', kind)}: {detail.get('message', '')}".rstrip(": ")
    if not why:
        for cond in status.get("conditions") or ():
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}"
    return f"{name}: {status.get('phase', 'Pending')}" + (f" ({why})" if why else "")
