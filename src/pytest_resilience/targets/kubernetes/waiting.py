"""Waiting on the cluster: a Deployment ready, a killed pod replaced.

Every wait is a watch from a list's resourceVersion (:meth:`~.calls.KubeCalls._watch_until`),
never a polling loop. Right after a kill the Deployment's status still counts the dead pod
as ready (the controllers have not caught up), so :meth:`KubeWaiting.wait_ready` first
counts Ready pods created since for every pod this target killed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

from ...errors import TargetError
from ..base import Pod, match_labels
from .calls import KubeCalls
from .conversions import (
    deployment_ready,
    labels_of,
    not_ready_message,
    pod_of,
    selector_string,
    timestamp,
)
from .watch import pod_is_ready

__all__ = ["HASH_LABELS", "KubeWaiting"]

#: the labels a controller stamps per revision or per pod: a replacement differs in them
HASH_LABELS = (
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
)


class KubeWaiting(KubeCalls):
    """``wait_ready`` of the Target protocol and ``wait_replaced`` of a killed pod."""

    #: (namespace, pod) -> when kill_pod deleted it
    _kill_times: dict[tuple[str, str], float]
    #: pods deleted by kill_pod, per workload, until a wait_ready sees them replaced
    _unreplaced: dict[str, list[Pod]]

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None:
        """Watch the Deployment until its updated and ready replicas reach the spec.

        Right after a kill the Deployment's status still counts the dead pod as ready
        (the controllers have not caught up), so pods this target killed must first be
        replaced by as many Ready pods created since.
        """
        deadline = time.monotonic() + timeout
        killed = self._unreplaced.pop(workload, [])
        if killed:
            spec = self._deployment(workload).get("spec", {})
            want = int(spec.get("replicas", 1)) if replicas is None else replicas
            try:
                self._wait_replacements(killed, want, deadline)
            except TargetError:
                self._unreplaced.setdefault(workload, []).extend(killed)
                raise
        dep: Mapping[str, Any] = self._deployment(workload)
        version = dep["metadata"].get("resourceVersion", "")
        while not deployment_ready(dep, replicas):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TargetError(not_ready_message(dep, replicas, timeout))
            found = self._watch_until(
                self._apps.list_namespaced_deployment,
                lambda o: o["metadata"]["name"] == workload,
                lambda o: deployment_ready(o, replicas),
                field_selector=f"metadata.name={workload}",
                resource="deployments",
                version=version,
                remaining=remaining,
            )
            if found is None:
                raise TargetError(not_ready_message(dep, replicas, timeout))
            dep = found

    def _wait_replacements(self, killed: list[Pod], want: int, deadline: float) -> None:
        """Until ``want`` pods of the killed pods' labels are Ready, none of them killed.

        Counting pods, not one fresh pod per kill: a kill may hit an earlier kill's
        replacement (real pod names are random, so "the first pod" can be the new one),
        and that kill needs no replacement of its own beyond the one that replaces it."""
        gone = {p.name for p in killed}
        wanted = {k: v for k, v in killed[0].labels.items() if k not in HASH_LABELS}
        ready: set[str] = set()

        def enough(o: Mapping[str, Any]) -> bool:
            name = o.get("metadata", {}).get("name")
            if name in gone:
                return False
            if pod_is_ready(o) and match_labels(labels_of(o), wanted):
                ready.add(name)
            else:
                ready.discard(name)
            return len(ready) >= want

        found = self._watch_until(
            functools.partial(
                self._core.list_namespaced_pod, label_selector=selector_string(wanted)
            ),
            lambda o: True,
            enough,
            resource="pods",
            namespace=killed[0].namespace,
            remaining=deadline - time.monotonic(),
            list_first=True,
            deleted=lambda o: ready.discard(o.get("metadata", {}).get("name")),
        )
        if found is None:
            raise TargetError(
                f"{len(ready)} of {want} pods Ready after killing {', '.join(sorted(gone))} "
                f"(selector {selector_string(wanted)})"
            )

    def wait_replaced(self, pod: Pod, *, timeout: float = 60.0) -> Pod:
        """After killing ``pod``: watch its siblings until a replacement is Ready.

        A replacement has the killed pod's labels (minus the template hashes) and was
        created no earlier than the kill.
        """
        deadline = time.monotonic() + timeout
        since = self._kill_times.get((pod.namespace, pod.name), time.time())
        wanted = {k: v for k, v in pod.labels.items() if k not in HASH_LABELS}

        def is_replacement(o: Mapping[str, Any]) -> bool:
            meta = o.get("metadata", {})
            created = timestamp(meta.get("creationTimestamp"))
            return (
                pod_is_ready(o)
                and match_labels(meta.get("labels") or {}, wanted)
                and created >= int(since)
            )

        found = self._watch_until(
            functools.partial(
                self._core.list_namespaced_pod, label_selector=selector_string(wanted)
            ),
            lambda o: True,
            is_replacement,
            resource="pods",
            namespace=pod.namespace,
            remaining=deadline - time.monotonic(),
            list_first=True,
        )
        if found is None:
            raise TargetError(
                f"no Ready replacement for pod {pod.namespace}/{pod.name} within {timeout}s "
                f"(selector {selector_string(wanted)})"
            )
        return pod_of(found)
