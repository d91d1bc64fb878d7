"""What the parts of the local target share: its services, pods and nodes, under one lock.

The supervisor loop, the pods, the readiness probes and the controller each read and change
this state only with :attr:`TargetState.cond` held (a condition on an RLock: a command run
on the supervisor thread may call back into the public API, and callers wait on it for a
change). The views here (``pod_view``, ``live_pods``, ...) expect the lock held too.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import TargetError
from ...ports import free_port
from ..base import EventKind, Node, Pod, TargetEvent, Workload
from ..services import ServiceSpec, dependency_order
from .cgroups import PodCgroups

__all__ = ["PodState", "ServiceState", "StartFailure", "TargetState", "pod_number"]

log = logging.getLogger("pytest_resilience.targets.local")


@dataclass
class PodState:
    name: str
    service: str
    number: int
    node: str
    version: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: Path
    pod_port: int | None
    cgroup: Path | None = None  # its own cgroup v2 directory, when we may create one
    memory_cgroup: Path | None = None  # its v1 memory cgroup (v2: the same as cgroup)
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    ever_ready: bool = False
    ready_since: float | None = None
    paused: bool = False
    terminating: bool = False
    kill_at: float | None = None
    failed_start: bool = False  # POD_FAILED_TO_START already emitted for this pod
    killed: bool = False  # killed through kill_pod: a deleted pod, replaced without back-off
    failures: int = 0
    next_probe_at: float = 0.0
    probe: Future[str | None] | None = None
    replaces: str | None = None  # the old pod this one replaces once ready
    superseded_by: str | None = None  # the new pod that will replace this one

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def cgroups(self) -> list[Path]:
        return [c for c in dict.fromkeys((self.cgroup, self.memory_cgroup)) if c is not None]


@dataclass
class StartFailure:
    """Why a pod of a service did not come up; start() turns it into a TargetError."""

    pod: str
    argv: list[str]
    reason: str
    tail: str


@dataclass
class ServiceState:
    spec: ServiceSpec
    port: int | None
    data_dir: Path | None
    version: str
    history: list[str]
    desired: int
    backoff: float
    active: bool = False
    restarts: int = 0
    held: int = 0  # slots the restart policy says not to refill
    counter: int = 0
    next_spawn_at: float = 0.0
    last_failure: StartFailure | None = None


class TargetState:
    """The services, pods, nodes and pending events of one local target."""

    def __init__(self, specs: Sequence[ServiceSpec], *, work_dir: Path, stop_grace_s: float):
        self.work_dir = work_dir
        self.stop_grace_s = stop_grace_s
        self.specs = {s.name: s for s in specs}
        self.order = _dependency_order(list(specs))
        self.cond = threading.Condition(threading.RLock())
        self.services: dict[str, ServiceState] = {}
        for spec in specs:
            port = free_port() if spec.port == "auto" else spec.port
            data = work_dir / "data" / spec.name if spec.data_dir else None
            self.services[spec.name] = ServiceState(
                spec=spec,
                port=port,
                data_dir=data,
                version=spec.version,
                history=[spec.version],
                desired=spec.replicas,
                backoff=spec.restart.backoff_s,
            )
        # Chosen now, like "auto" ports, so {proxies.<name>.port} is known before anything runs.
        self.proxy_ports = {s.name: free_port() for s in specs if s.proxied}
        self.nodes = list(dict.fromkeys(n for s in specs for n in s.nodes))
        self.cordoned: set[str] = set()
        self.nodes_down: set[str] = set()
        self.pods: dict[str, PodState] = {}
        self.subscribers: list[Callable[[TargetEvent], None]] = []
        self.outbox: list[TargetEvent] = []
        self.cgroups = PodCgroups()
        self.shutting_down = False

    def log_path(self, name: str) -> Path:
        return self.work_dir / "logs" / f"{name}.log"

    def service(self, name: str) -> ServiceState:
        try:
            return self.services[name]
        except KeyError:
            raise TargetError(
                f"no service {name!r} in this local target; services: {', '.join(self.services)}"
            ) from None

    def pod(self, pod: Pod | str) -> PodState:
        name = pod.name if isinstance(pod, Pod) else pod
        with self.cond:
            state = self.pods.get(name)
        if state is None or state.proc is None:
            raise TargetError(f"no running pod named {name!r} (it may have died or been replaced)")
        return state

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]:
        with self.cond:
            self.subscribers.append(callback)

        def unsubscribe() -> None:
            with self.cond, contextlib.suppress(ValueError):
                self.subscribers.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ views

    def pod_views(self) -> list[Pod]:
        """Every live pod (not terminating), as the Target API shows it."""
        with self.cond:
            return [
                self.pod_view(p)
                for p in self.pods.values()
                if not p.terminating and p.proc is not None
            ]

    def workload_views(self) -> list[Workload]:
        with self.cond:
            return [
                Workload(
                    name=name,
                    replicas=svc.desired,
                    ready_replicas=self.ready_count(name),
                    version=svc.version,
                    labels=dict(svc.spec.labels),
                )
                for name, svc in self.services.items()
            ]

    def node_views(self) -> list[Node]:
        with self.cond:
            return [
                Node(
                    name=n,
                    ready=n not in self.nodes_down,
                    schedulable=n not in self.cordoned,
                )
                for n in self.nodes
            ]

    def labels_in_use(self) -> list[str]:
        with self.cond:
            return sorted(
                {f"{k}={v}" for s in self.services.values() for k, v in s.spec.labels.items()}
            )

    # ------------------------------------------------------------------ views (lock held)

    def pod_gone(self, name: str, pgid: int | None) -> bool:
        state = self.pods.get(name)
        return state is None or state.pid != pgid

    def pod_view(self, p: PodState) -> Pod:
        port = self.services[p.service].port
        return Pod(
            name=p.name,
            workload=p.service,
            labels=dict(self.services[p.service].spec.labels),
            node=p.node,
            pid=p.pid,
            ready=p.ready,
            version=p.version,
            ports=tuple(x for x in (port, p.pod_port) if x is not None),
            cgroup=self.cgroups.relative(p.cgroup),
        )

    def live_pods(self, service: str | None = None) -> list[PodState]:
        return [
            p
            for p in self.pods.values()
            if p.proc is not None
            and not p.terminating
            and (service is None or p.service == service)
        ]

    def counted(self, service: str) -> list[PodState]:
        """Pods that fill a replica slot: live and not about to be replaced."""
        return [p for p in self.live_pods(service) if p.superseded_by is None]

    def ready_count(self, service: str) -> int:
        return sum(1 for p in self.live_pods(service) if p.ready)

    def describe_pods(self, service: str) -> str:
        pods = self.live_pods(service)
        if not pods:
            return "no pod running"
        return ", ".join(
            f"{p.name} {'ready' if p.ready else 'paused' if p.paused else 'not ready'}"
            for p in pods
        )

    # ------------------------------------------------------------------ changes (lock held)

    def emit(
        self,
        kind: EventKind,
        *,
        workload: str | None = None,
        pod: str | None = None,
        node: str | None = None,
        detail: str = "",
    ) -> None:
        """Queue an event; the supervisor hands it to the subscribers outside the lock."""
        restarts = self.services[workload].restarts if workload in self.services else 0
        event = TargetEvent(
            kind,
            workload=workload,
            pod=pod,
            node=node,
            detail=detail,
            restarts=restarts,
        )
        log.debug("event %s", event)
        self.outbox.append(event)

    def update_node(self, node: str) -> None:
        """A node is NotReady while every pod on it is paused."""
        on_node = [p for p in self.live_pods() if p.node == node]
        down = bool(on_node) and all(p.paused for p in on_node)
        if down and node not in self.nodes_down:
            self.nodes_down.add(node)
            self.emit(EventKind.NODE_NOT_READY, node=node, detail="every pod on it is paused")
        elif not down and node in self.nodes_down:
            self.nodes_down.discard(node)
            self.emit(EventKind.NODE_READY, node=node)


def pod_number(pod: str) -> int:
    tail = pod.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _dependency_order(specs: list[ServiceSpec]) -> list[str]:
    """The start order; a cycle is services.dependency_order's to find (one place for both the
    file checker and specs built in Python), an unknown name this target's to refuse."""
    names = {s.name for s in specs}
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in names:
                raise TargetError(f"service {spec.name!r} depends on unknown service {dep!r}")
    return dependency_order(specs)
