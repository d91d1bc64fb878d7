"""The Kubernetes target's event stream: subscribers hear every pod, Deployment and node
transition, from three :class:`~.watch.ResourceWatch` loops (pods and Deployments of the
target's namespace, the cluster's nodes) that start on the first subscription.

Each watch gets an API client of its own, so a stream held open for ``watch_timeout_s``
never waits behind, or blocks, the target's requests.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..base import TargetEvent
from .calls import KubeCalls
from .watch import Differ, ResourceWatch, diff_deployment, diff_node, diff_pod

__all__ = ["KubeEvents"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")


class KubeEvents(KubeCalls):
    """``subscribe`` of the Target protocol; ``_emit`` for the target's own events."""

    _watch_timeout_s: int
    _subscribers: list[Callable[[TargetEvent], None]]
    _sub_lock: threading.Lock
    _watches: list[ResourceWatch]
    #: the watches' own API clients, closed with the target
    _watch_clients: list[Any]

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        """Call ``callback`` (from a watch thread) for every pod/node/deployment transition.

        The watches start on the first subscription and run until :meth:`close`.
        """
        with self._sub_lock:
            self._subscribers.append(callback)
            if not self._watches:
                self._start_watches()

        def unsubscribe() -> None:
            with self._sub_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait_watching(self, timeout: float = 10.0) -> bool:
        """True once every watch has its baseline list (events after that are not missed)."""
        deadline = time.monotonic() + timeout
        return all(w.synced.wait(max(deadline - time.monotonic(), 0)) for w in self._watches)

    def _start_watches(self) -> None:
        import kubernetes.client as kc

        def client() -> Any:
            c = self.conn.api_client()
            self._watch_clients.append(c)
            return c

        ns = self.namespace
        specs: list[tuple[str, Callable[..., Any], Differ]] = [
            ("pods", functools.partial(kc.CoreV1Api(client()).list_namespaced_pod, ns), diff_pod),
            (
                "deployments",
                functools.partial(kc.AppsV1Api(client()).list_namespaced_deployment, ns),
                diff_deployment,
            ),
            ("nodes", kc.CoreV1Api(client()).list_node, diff_node),
        ]
        for name, fn, differ in specs:
            watch = ResourceWatch(
                name=name,
                list_fn=fn,
                differ=differ,
                emit=self._emit,
                timeout_s=self._watch_timeout_s,
            )
            self._watches.append(watch.start())

    def _emit(self, event: TargetEvent) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("subscriber %r failed on %s", callback, event)
