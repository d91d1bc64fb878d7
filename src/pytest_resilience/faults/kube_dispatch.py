"""The Kubernetes half of each fault: pick the pods, call the target's primitive per pod,
keep its change records for the revert and the ledger.

The fault modules call in here when ``ctx.target.name == "kubernetes"``, so the local
code paths stay as they are. What the ledger gets from ``inject()`` is
``{"records": [ChangeRecord.to_dict(), ...]}``: undo needs nothing else, in this process
or in a cleanup after SIGKILL. A fault killed halfway through ``inject()`` has no records
in its ledger spec yet; but every primitive annotates the objects it changes with the
ledger id *before* it changes them, so the revert finds them with ``find_marked()``.

Nothing here imports the ``kubernetes`` client: the fault modules import this module for
every run, local ones included.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ..errors import FaultError, SelectorMatchedNothing
from ..targets.base import Pod
from ..targets.kube_faults import ChangeRecord
from .base import FaultContext

if TYPE_CHECKING:
    from ..targets.kubernetes import KubernetesTarget

__all__ = [
    "KubeChanges",
    "disk_fill",
    "handles",
    "memory_stress",
    "network_block",
    "node_failure",
    "revert",
    "revert_spec",
]

log = logging.getLogger("pytest_resilience.faults")

RECORDS = "records"


class KubeChanges:
    """What one fault changed on the cluster so far; its revert undoes these, newest first."""

    def __init__(self, ledger_id: str) -> None:
        if not ledger_id:
            raise FaultError(
                "a kubernetes fault needs a ledger id: inject it through a FaultSession"
            )
        self.ledger_id = ledger_id
        self.records: list[ChangeRecord] = []
        #: False until every primitive returned: a revert then also looks for marked leftovers
        self.complete = False

    def spec(self) -> dict[str, Any]:
        return {RECORDS: [r.to_dict() for r in self.records]}


def handles(spec: Mapping[str, Any], ctx: FaultContext) -> bool:
    """Whether a ledger spec is a kubernetes one (else the fault's local reverter runs)."""
    return RECORDS in spec or spec.get("target", ctx.target.name) == "kubernetes"


# ------------------------------------------------------------------------------ faults


def network_block(
    ctx: FaultContext,
    changes: KubeChanges,
    *,
    selector: str | Mapping[str, str] | None,
    port: int | None,
    direction: str,
    action: str,
) -> dict[str, Any]:
    """Block each matching pod's traffic in its own network namespace (ephemeral container
    with iptables; a NetworkPolicy where ephemeral containers are refused)."""
    if selector is None:
        raise FaultError(
            "network_block on kubernetes needs a pod selector (e.g. 'app=postgres'); "
            "port= alone names no pod"
        )
    target = _kube(ctx)
    for pod in target.select(selector):
        changes.records.append(
            target.network_block(
                pod,
                ledger_id=changes.ledger_id,
                ports=[port] if port else (),
                direction=direction,  # type: ignore[arg-type]
                action=action,  # type: ignore[arg-type]
            )
        )
    changes.complete = True
    return changes.spec()


def disk_fill(
    ctx: FaultContext,
    changes: KubeChanges,
    *,
    service: str,
    percent: float,
    path: str | None,
) -> dict[str, Any]:
    """Fill the volume behind ``path`` (default: the first writable mount) in every pod of
    the workload ``service`` up to ``percent`` of its filesystem, measured with ``df``."""
    target = _kube(ctx)
    for pod in _workload_pods(target, service):
        container, directory = _fill_dir(target, pod, path)
        usage = target.disk_usage(pod, directory, container=container)
        if usage is None:  # dry run: nothing measured, nothing written
            size_mb = 1
        else:
            total, used = usage
            size_mb = math.ceil((total * percent / 100 - used) / 2**20)
            if size_mb <= 0:
                log.info("disk_fill: %s already at %g%% or more", pod.name, percent)
                continue
        changes.records.append(
            target.disk_fill(
                pod,
                ledger_id=changes.ledger_id,
                path=directory,
                size_mb=size_mb,
                container=container,
            )
        )
    changes.complete = True
    return changes.spec()


def memory_stress(
    ctx: FaultContext,
    changes: KubeChanges,
    *,
    selector: str | Mapping[str, str],
    mb: int,
    duration_s: float,
    container: str | None = None,
) -> dict[str, Any]:
    """Hold ``mb`` MiB in every matching pod (a workload name or a label selector) for
    ``duration_s``; the revert kills the holder."""
    target = _kube(ctx)
    for pod in _workload_pods(target, selector):
        changes.records.append(
            target.memory_stress(
                pod,
                ledger_id=changes.ledger_id,
                mb=mb,
                duration_s=duration_s,
                container=container,
            )
        )
    changes.complete = True
    return changes.spec()


def node_failure(ctx: FaultContext, changes: KubeChanges, *, node: str) -> dict[str, Any]:
    """Cordon the node and evict its pods (Eviction API, PodDisruptionBudgets honoured)."""
    changes.records.append(_kube(ctx).node_failure(node, ledger_id=changes.ledger_id))
    changes.complete = True
    return changes.spec()


# ------------------------------------------------------------------------------ revert


def revert(ctx: FaultContext, changes: KubeChanges) -> None:
    """Undo what :class:`KubeChanges` holds; after a half-done inject also what is marked."""
    target = _kube(ctx)
    for record in reversed(changes.records):
        target.undo(record)
    if not changes.complete:
        _undo_marked(target, changes.ledger_id)


def revert_spec(spec: Mapping[str, Any], ctx: FaultContext) -> None:
    """The registered reverter's kubernetes branch: undo from the ledger spec alone."""
    if ctx.target.name != "kubernetes":
        raise FaultError(
            "this fault was injected on kubernetes: revert it with `pytest --chaos-cleanup "
            "--chaos-target=kubernetes --kube-context <context> --chaos-namespace <ns>`"
        )
    target = _kube(ctx)
    records = spec.get(RECORDS)
    if records is None:  # killed before inject returned: the annotations say what was done
        ledger_id = spec.get("ledger_id")
        if not ledger_id:
            raise FaultError(f"kubernetes ledger spec without records or ledger id: {spec!r}")
        _undo_marked(target, str(ledger_id))
        return
    for record in reversed(records):
        target.undo(record)


def _undo_marked(target: KubernetesTarget, ledger_id: str) -> None:
    for record in target.find_marked():
        if record.ledger_id == ledger_id:
            log.info("undoing %s on %s, marked by a half-done inject", record.kind, record.objects)
            target.undo(record)


# ----------------------------------------------------------------------------- helpers


def _kube(ctx: FaultContext) -> KubernetesTarget:
    return ctx.target  # type: ignore[return-value]  # name == "kubernetes" was checked


def _workload_pods(target: KubernetesTarget, name: str | Mapping[str, str]) -> list[Pod]:
    """A workload (Deployment) name or a label selector, as the local target takes both."""
    if isinstance(name, str) and "=" not in name:
        pods = [p for p in target.pods() if p.workload == name]
        if not pods:
            raise SelectorMatchedNothing(
                f"no pod of workload {name!r} in namespace {target.namespace!r} "
                f"(context {target.context!r}); give a label selector such as 'app={name}'"
            )
        return pods
    return target.select(name)


def _fill_dir(target: KubernetesTarget, pod: Pod, path: str | None) -> tuple[str | None, str]:
    """(container, directory) to fill: ``path`` inside a mount, or the first writable mount."""
    mounts = target.volume_mounts(pod)
    if path is None:
        if not mounts:
            raise SelectorMatchedNothing(
                f"disk_fill: pod {pod.namespace}/{pod.name} mounts no writable volume; "
                "give path= (a directory on the filesystem to fill)"
            )
        return mounts[0]
    chosen = PurePosixPath(path)
    if not chosen.is_absolute():
        if not mounts:
            raise FaultError(
                f"disk_fill: relative path {path!r} but pod {pod.name} mounts no volume; "
                "give an absolute path"
            )
        container, mount = mounts[0]
        return container, str(PurePosixPath(mount) / chosen)
    for container, mount in mounts:
        if chosen.is_relative_to(mount):
            return container, str(chosen)
    return None, str(chosen)
