"""Nodes: cordon, uncordon, and drain through the Eviction API.

A drain evicts rather than deletes, so PodDisruptionBudgets are honoured: the API server
answers 429 while a budget allows no disruption, and the eviction is retried with back-off
until the drain's deadline. DaemonSet and mirror pods stay, as ``kubectl drain`` leaves them.
"""

from __future__ import annotations

import logging
import time

from ...errors import TargetError
from ..base import Pod
from .api import KubeNotFound, KubeTooManyRequests
from .calls import KubeCalls
from .conversions import evictable, pod_of

__all__ = ["KubeNodes"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")


class KubeNodes(KubeCalls):
    """``cordon``, ``uncordon`` and ``drain`` of the Target protocol."""

    def cordon(self, node: str) -> None:
        self._set_unschedulable(node, True)

    def uncordon(self, node: str) -> None:
        self._set_unschedulable(node, False)

    def drain(self, node: str, *, timeout: float = 120.0) -> list[Pod]:
        """Cordon, then evict every pod on the node through the Eviction API.

        DaemonSet pods and mirror (static) pods are skipped, as ``kubectl drain`` does;
        so are pods in namespaces the safety rules protect (logged). A 429 (a
        PodDisruptionBudget says not now) is retried with back-off until ``timeout``.
        Returns the pods whose eviction was accepted.
        """
        self.cordon(node)
        data = self._read(
            self._core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            verb="list",
            resource="pods",
        )
        deadline = time.monotonic() + timeout
        evicted: list[Pod] = []
        for obj in data.get("items") or ():
            if obj.get("spec", {}).get("nodeName") != node or not evictable(obj):
                continue
            pod = pod_of(obj)
            try:
                self.policy.check_namespace(pod.namespace)
            except TargetError as refusal:
                log.warning(
                    "drain %s: leaving pod %s/%s: %s", node, pod.namespace, pod.name, refusal
                )
                continue
            if self._evict(pod, deadline):
                evicted.append(pod)
        return evicted

    def _evict(self, pod: Pod, deadline: float) -> bool:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        delay = 0.1
        while True:
            try:
                self._change(
                    f"CREATE eviction for pod {pod.namespace}/{pod.name}",
                    self._core.create_namespaced_pod_eviction,
                    pod.name,
                    pod.namespace,
                    body,
                    verb="create",
                    resource="pods/eviction",
                    namespace=pod.namespace,
                    name=pod.name,
                )
                return True
            except KubeNotFound:
                return False  # already gone
            except KubeTooManyRequests as exc:
                if time.monotonic() + delay > deadline:
                    raise TargetError(
                        f"drain: eviction of pod {pod.namespace}/{pod.name} still refused at "
                        f"the deadline (a PodDisruptionBudget allows no disruption): {exc}"
                    ) from None
                log.info("eviction of %s refused (429), retrying in %.1fs", pod.name, delay)
                time.sleep(delay)  # back-off demanded by the server, not synchronisation
                delay = min(delay * 2, 5.0)

    def _set_unschedulable(self, node: str, value: bool) -> None:
        self._change(
            f"PATCH node {node} spec.unschedulable={value}",
            self._core.patch_node,
            node,
            {"spec": {"unschedulable": value or None}},
            verb="patch",
            resource="nodes",
            name=node,
        )
