"""The one seam between "what to break or heal" and "where it runs".

Faults and remediation actions speak only to :class:`Target`; the embedded local target
and the Kubernetes target implement it. Values crossing the seam are small frozen
dataclasses, so a fault never holds on to a live client object or process handle.
"""

from __future__ import annotations

import enum
import signal as _signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import ConfigError

__all__ = [
    "EventKind",
    "ExecResult",
    "Node",
    "Pod",
    "Target",
    "TargetEvent",
    "Workload",
    "match_labels",
    "parse_selector",
]


@dataclass(frozen=True)
class Pod:
    """A running replica: a local process or a Kubernetes pod."""

    name: str
    workload: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    node: str | None = None
    host: str = "127.0.0.1"
    pid: int | None = None
    ready: bool = False
    version: str = ""
    #: TCP ports this pod listens on (its service port and its own), for network faults
    ports: tuple[int, ...] = ()
    #: cgroup v2 path of a local pod (iptables ``-m cgroup --path``), None elsewhere
    cgroup: str | None = None


@dataclass(frozen=True)
class Workload:
    """A set of replicas managed together (a local service, a Deployment)."""

    name: str
    namespace: str = "default"
    replicas: int = 1
    ready_replicas: int = 0
    version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    name: str
    ready: bool = True
    schedulable: bool = True


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class EventKind(enum.StrEnum):
    POD_STARTED = "pod_started"
    POD_READY = "pod_ready"
    POD_NOT_READY = "pod_not_ready"
    POD_DIED = "pod_died"
    POD_FAILED_TO_START = "pod_failed_to_start"
    NODE_NOT_READY = "node_not_ready"
    NODE_READY = "node_ready"
    SCALED = "scaled"
    ROLLED_BACK = "rolled_back"
    RESTARTED = "restarted"


@dataclass(frozen=True)
class TargetEvent:
    """Something the platform saw happen; ``at`` is wall-clock seconds (``time.time()``)."""

    kind: EventKind
    workload: str | None = None
    pod: str | None = None
    node: str | None = None
    detail: str = ""
    restarts: int = 0
    at: float = field(default_factory=time.time)


@runtime_checkable
class Target(Protocol):
    """Where faults land and remediation acts.

    Every method that changes something is synchronous and returns once the platform has
    accepted the change; waiting for its effect is :meth:`wait_ready`'s job.
    """

    name: str

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]: ...

    def workloads(self) -> list[Workload]: ...

    def nodes(self) -> list[Node]: ...

    def kill_pod(self, pod: Pod, *, sig: int = _signal.SIGKILL) -> None: ...

    def pause_pod(self, pod: Pod) -> None: ...

    def resume_pod(self, pod: Pod) -> None: ...

    def exec(self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult: ...

    def scale(self, workload: str, replicas: int) -> None: ...

    def restart(self, workload: str) -> None: ...

    def rollback(self, workload: str) -> str: ...

    def cordon(self, node: str) -> None: ...

    def uncordon(self, node: str) -> None: ...

    def drain(self, node: str) -> None: ...

    def wait_ready(
        self, workload: str, *, timeout: float = 60.0, replicas: int | None = None
    ) -> None: ...

    def subscribe(self, callback: Callable[[TargetEvent], None]) -> Callable[[], None]: ...

    def endpoint(self, workload: str) -> str: ...

    def close(self) -> None: ...


def parse_selector(selector: str | Mapping[str, str]) -> dict[str, str]:
    """Parse a Kubernetes-style equality selector (``app=api,tier=web``).

    Only equality terms are supported; a set-based term is refused rather than
    silently matching everything.
    """
    if isinstance(selector, Mapping):
        return {str(k): str(v) for k, v in selector.items()}
    result: dict[str, str] = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, sep, value = term.partition("=")
        key, value = key.strip().rstrip("="), value.strip().lstrip("=")
        if not sep or not key or not value or "!" in key:
            raise ConfigError(
                f"unsupported selector term {term!r}: use key=value terms joined by commas",
                field="selector",
            )
        result[key] = value
    return result


def match_labels(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
