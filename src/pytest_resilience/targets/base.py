"""The one seam between "what to break or heal" and "where it runs".

Faults and remediation actions speak only to :class:`Target`; the embedded local target
and the Kubernetes target implement it. Values crossing the seam are small frozen
dataclasses, so a fault never holds on to a live client object or process handle.

Three layers: the core :class:`Target` protocol (pods, workloads, nodes, lifecycle,
events); the :class:`FaultPrimitives` every target carries out itself, each leaving
:class:`ChangeRecord` s that one generic ``undo(record)`` reverts, in this process or in a
cleanup after SIGKILL; and the small capability protocols (:data:`CAPABILITIES`) for what
not every target has. Code above the seam asks ``isinstance(target, PodAdmin)``, never
``target.name`` or ``getattr``; a scenario needing a capability its target lacks is
skipped at collection (:mod:`pytest_resilience.capabilities`).

Size: over 500 lines because it is the seam: the protocols and every value type crossing
them in one file, so a target's author reads the whole contract in one place.
"""

from __future__ import annotations

import enum
import signal as _signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import ConfigError, FaultError

if TYPE_CHECKING:
    from .hpa_spec import AutoscalerSpec, AutoscalerStatus

__all__ = [
    "CAPABILITIES",
    "Autoscaling",
    "ChangeLog",
    "ChangeRecord",
    "ConfiguredCapabilities",
    "DependencyProxies",
    "EventKind",
    "ExecResult",
    "FaultPrimitives",
    "LoadWorkers",
    "Node",
    "NodeOutage",
    "ObjectRef",
    "PlacedWorkers",
    "Pod",
    "PodAdmin",
    "PodLogs",
    "PodMetrics",
    "PodResources",
    "Releases",
    "Target",
    "TargetEvent",
    "VolumeUsage",
    "Workload",
    "match_labels",
    "parse_selector",
]

Direction = Literal["ingress", "egress", "both"]
BlockAction = Literal["drop", "reject"]


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
    #: an autoscaler changed a workload's replicas (``detail``: from -> to and why)
    AUTOSCALED = "autoscaled"


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


@dataclass(frozen=True)
class ObjectRef:
    """One thing a fault changed: a Pod, a Node, a NetworkPolicy, an iptables chain, a file."""

    kind: str
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class ChangeRecord:
    """What one fault primitive changed; enough to undo it from this alone.

    Target-neutral on the outside (the ledger stores ``to_dict()`` and hands it back to
    ``target.undo``); ``detail`` is the making target's own business. ``target`` names the
    kind of target that made it, ``context`` where (a kube context, a host), so an undo on
    the wrong one is refused with what to run instead.
    """

    kind: str
    ledger_id: str
    context: str
    objects: tuple[ObjectRef, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    target: str = "kubernetes"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["objects"] = [asdict(o) for o in self.objects]
        data["detail"] = dict(self.detail)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChangeRecord:
        try:
            return cls(
                kind=str(data["kind"]),
                ledger_id=str(data["ledger_id"]),
                context=str(data.get("context", "")),
                objects=tuple(ObjectRef(**o) for o in data.get("objects") or ()),
                detail=dict(data.get("detail") or {}),
                dry_run=bool(data.get("dry_run", False)),
                # records written before targets were named came from kubernetes only
                target=str(data.get("target") or "kubernetes"),
            )
        except (KeyError, TypeError) as exc:
            raise FaultError(f"not a change record ({exc}): {dict(data)!r}") from None


class ChangeLog:
    """The change records of one fault, written ahead of the change they describe.

    A primitive calls :meth:`put` *before* it acts, so a SIGKILL at any moment leaves a
    record the cleanup can undo (an undo of something never done is a no-op). ``persist``
    writes the whole list (to the ledger); ``complete`` says every primitive returned.
    """

    def __init__(
        self,
        ledger_id: str,
        *,
        persist: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        if not ledger_id:
            raise FaultError("a fault primitive needs a ledger id: inject through a FaultSession")
        self.ledger_id = ledger_id
        self.records: list[ChangeRecord] = []
        self.complete = False
        self._persist = persist

    def put(self, record: ChangeRecord) -> None:
        """Add ``record``, or replace the one about the same objects (a fuller version)."""
        for i, known in enumerate(self.records):
            if (known.kind, known.objects) == (record.kind, record.objects):
                self.records[i] = record
                break
        else:
            self.records.append(record)
        self._write()

    def discard(self, record: ChangeRecord) -> None:
        """Forget a record whose change did not happen (and was undone by the primitive)."""
        self.records = [
            r for r in self.records if (r.kind, r.objects) != (record.kind, record.objects)
        ]
        self._write()

    def spec(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records]}

    def _write(self) -> None:
        if self._persist is not None:
            self._persist(self.spec()["records"])


@runtime_checkable
class FaultPrimitives(Protocol):
    """The faults every target carries out itself, and the one undo of what they did.

    Each primitive validates what only the target can know (the selector matches, the
    tool or privilege it needs is there) *before* its first :meth:`ChangeLog.put`, so a
    failed precondition leaves nothing to revert; then it records ahead and acts.
    """

    def network_block(
        self,
        selector: str | Mapping[str, str] | None,
        *,
        port: int | None,
        direction: Direction,
        action: BlockAction,
        name: str,
        changes: ChangeLog,
    ) -> None: ...

    def disk_fill(
        self, workload: str, *, percent: float, path: str | None, changes: ChangeLog
    ) -> None: ...

    def memory_stress(
        self,
        selector: str | Mapping[str, str],
        *,
        share: float,
        mb: int | None,
        hold: bool,
        count: int | None,
        changes: ChangeLog,
    ) -> None: ...

    def node_failure(self, node: str, *, changes: ChangeLog) -> None: ...

    def undo(self, record: ChangeRecord | Mapping[str, Any]) -> str | None:
        """Revert one record; idempotent. Returns why nothing was left to undo, if so."""
        ...

    def undo_unrecorded(self, ledger_id: str, *, made_on: str) -> int:
        """Undo what a fault killed mid-primitive changed without a record reaching the
        ledger (annotated objects, tagged helpers); returns how many it found.
        ``made_on`` is the target name the ledger entry was opened on: a different
        target refuses, saying which to use."""
        ...


# -- capabilities: what not every target has ---------------------------------------------


@runtime_checkable
class PodMetrics(Protocol):
    """Each pod serves Prometheus metrics this process can read."""

    def scrape_pod(self, pod: Pod, *, timeout: float) -> str | None:
        """The text of the pod's /metrics; None for a pod that serves none or does not
        answer (skipped, never waited for)."""
        ...

    def metrics_address(self, pod: Pod) -> str | None:
        """``host:port`` where a Prometheus on this machine scrapes the pod's /metrics
        directly; None where it cannot (pods reached only through the target)."""
        ...


@runtime_checkable
class PodAdmin(Protocol):
    """Each pod has admin hooks (``POST /admin/...``) this process can call."""

    def post_admin(self, pod: Pod, path: str, *, timeout: float) -> bytes:
        """POST ``path`` to the pod's admin port; the answer's body. TargetError on a
        non-2xx answer, no answer, or a pod without admin hooks."""
        ...


@runtime_checkable
class DependencyProxies(Protocol):
    """Dependencies are reached through Toxiproxy proxies named after them."""

    def toxiproxy_server(self) -> str | None:
        """URL of the Toxiproxy server carrying the dependencies, None when none is set up."""
        ...


@runtime_checkable
class Releases(Protocol):
    """A workload can be switched to another release, as ``bad_deploy`` does.

    ``Workload.version`` reports the release that runs; :meth:`Target.rollback` goes back.
    """

    def rollout(self, workload: str, version: str) -> None: ...


@runtime_checkable
class PodResources(Protocol):
    """A pod's resource usage against its limits can be read."""

    def memory_usage(self, pod: Pod) -> tuple[int, int | None]:
        """(bytes used, limit in bytes or None)."""
        ...


@runtime_checkable
class PodLogs(Protocol):
    """A pod's output can be read (for error messages that show what the pod said)."""

    def log_tail(self, pod: Pod, *, lines: int = 3) -> str: ...


@runtime_checkable
class VolumeUsage(Protocol):
    """A workload's data volume can be measured as the platform counts it."""

    def volume_usage(self, workload: str, *, path: str | None = None) -> float | None:
        """The used share (0..1) of the volume behind ``path`` (default: the first
        writable one), the fullest over the workload's pods: what ``disk_fill`` fills
        against, so an alert on it sees the fault as the kubelet or ``df`` would."""
        ...


@runtime_checkable
class NodeOutage(Protocol):
    """A node can be made to hang: NotReady, its pods still on it and answering nothing.

    What a scenario needs to show an alert on a NotReady node being acted on: where
    ``node_failure`` is a drain (Kubernetes, whose kubelet would report the node Ready
    again), the pods have moved before anything could notice the node.
    """

    def hang_node(self, node: str, *, changes: ChangeLog) -> None: ...


@runtime_checkable
class Autoscaling(Protocol):
    """A workload's replicas can follow its pods' CPU, as a HorizontalPodAutoscaler does.

    The spec is an autoscaling/v2 HPA (:class:`~.hpa_spec.AutoscalerSpec`, read from a manifest):
    Kubernetes gets it as a real HorizontalPodAutoscaler object, the local target runs the
    same algorithm itself. Every rescale is an ``autoscaled`` event, so it is on the
    timeline.
    """

    def autoscale(self, spec: AutoscalerSpec) -> None:
        """Put ``spec.workload`` under this autoscaler (replacing one already there)."""
        ...

    def stop_autoscaling(self, workload: str) -> None:
        """Remove the workload's autoscaler; its replicas stay as they are."""
        ...

    def autoscaler_status(self, workload: str) -> AutoscalerStatus | None:
        """What the autoscaler last saw and decided; None when the workload has none."""
        ...


class PlacedWorkers(Protocol):
    """Load workers a target runs for one load run (:meth:`LoadWorkers.place_load_workers`)."""

    @property
    def name(self) -> str:
        """What to look them up by, ``"deployment chaos-demo/locust-workers"``."""
        ...

    def describe(self) -> str:
        """Their state in a line or two (pods pending, image not pulled, ...), for the
        error that says why they never connected."""
        ...

    def remove(self) -> None:
        """Take them away (idempotent); returns once the platform accepted it."""
        ...


@runtime_checkable
class LoadWorkers(Protocol):
    """Locust workers run inside the platform, next to the system under load, and dial the
    master that runs in this process (``load(workers=N)``): load from the cluster's nodes,
    not from this machine's cores, through the workload's in-cluster address."""

    def load_master_address(self) -> str:
        """An address of this machine the platform's pods can connect to (the master binds
        it)."""
        ...

    def load_endpoint(self, workload: str) -> str:
        """The workload's URL as the platform's pods reach it (``endpoint`` is this
        machine's view)."""
        ...

    def place_load_workers(self, args: Sequence[str], *, replicas: int) -> PlacedWorkers:
        """Start ``replicas`` workers, each ``python -m pytest_resilience._locust_driver``
        with ``args``; returns once the platform accepted them (not once they connected)."""
        ...


@runtime_checkable
class ConfiguredCapabilities(Protocol):
    """A target class whose capabilities depend on how the run is configured (the
    Kubernetes target has Toxiproxy only with ``--toxiproxy-url``); asked at collection."""

    @classmethod
    def capabilities_missing(cls, settings: Any) -> Mapping[str, str]:
        """Capability name -> why this run's settings leave the target without it."""
        ...


#: capability name (as in ``@pytest.mark.chaos(requires=[...])``) -> protocol
CAPABILITIES: dict[str, type] = {
    "pod_metrics": PodMetrics,
    "pod_admin": PodAdmin,
    "dependency_proxies": DependencyProxies,
    "releases": Releases,
    "pod_resources": PodResources,
    "pod_logs": PodLogs,
    "node_outage": NodeOutage,
    "volume_usage": VolumeUsage,
    "autoscaling": Autoscaling,
    "load_workers": LoadWorkers,
}


@runtime_checkable
class Target(FaultPrimitives, Protocol):
    """Where faults land and remediation acts.

    Every method that changes something is synchronous and returns once the platform has
    accepted the change; waiting for its effect is :meth:`wait_ready`'s job.
    """

    name: str
    #: False where a session's pods are its own processes (local): a killed session's
    #: pods, releases and paused nodes died with it, so a cleanup has none to restore.
    pods_outlive_session: bool

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]: ...

    def workloads(self) -> list[Workload]: ...

    def nodes(self) -> list[Node]: ...

    def kill_pod(self, pod: Pod, *, sig: int = _signal.SIGKILL) -> None: ...

    def replace_pod(self, pod: Pod) -> None:
        """A fresh replica in the pod's place, the platform's graceful way: the remedy
        for a pod stuck in a crash loop or leaking, where ``kill_pod`` is the fault."""
        ...

    def pause_pod(self, pod: Pod) -> None: ...

    def resume_pod(self, pod: Pod) -> None: ...

    def exec(self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0) -> ExecResult: ...

    def scale(self, workload: str, replicas: int) -> None: ...

    def restart(self, workload: str) -> None: ...

    def rollback(self, workload: str) -> str: ...

    def cordon(self, node: str) -> None: ...

    def uncordon(self, node: str) -> None: ...

    def drain(self, node: str) -> list[Pod]:
        """Cordon ``node`` and move its pods elsewhere, the platform's way (Kubernetes: the
        Eviction API; local: a replacement started before each pod stops). Returns the
        pods taken off the node."""
        ...

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
