"""Fault primitives on a Kubernetes cluster, each undoable from its record alone.

Each primitive makes a :class:`~..base.ChangeRecord`: what was changed (pods, nodes,
NetworkPolicies) and what the undo needs (container, chain, file, previous state). It goes
into the fault's :class:`~..base.ChangeLog` (the ledger) *before* the object is touched, so
``undo(record)`` reverts it in another process, after a crash, on another machine; an
undo of what never happened (a container never added or never started) closes it, saying
so. Then every changed object is annotated with ``pytest-resilience/fault: <ledger ids>``
and ``pytest-resilience/record-<hash>: <record JSON>``; ``find_marked()`` reads them
back, so a cleanup without the ledger file still finds what to revert.

The families live in their own modules, mixed into :class:`KubeFaults` here: network
block (:mod:`.network_block`), disk fill (:mod:`.disk_fill`), the marks
(:mod:`.marks`); memory stress, node failure and the undo of every record are here,
with the seam's primitives that call them. :mod:`.fault_host` says what they use of
the target.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
from collections.abc import Mapping
from typing import Any, Literal

from ...errors import FaultError
from ..base import ChangeLog, ChangeRecord, ObjectRef, Pod
from .api import KubeNotFound
from .disk_fill import KubeDiskFill, VolumeBound, _measure_volume, quantity_bytes
from .fault_host import TARGET, KubeHost, _ahead, _drop, _short, _workload_pods
from .marks import FAULT_ANNOTATION, RECORD_ANNOTATION_PREFIX, KubeMarks
from .network_block import (
    BLOCK_LABEL_PREFIX,
    NETWORK_POLICY_LIMITS,
    Direction,
    KubeNetworkBlock,
    _iptables_revert,
)

__all__ = [
    "BLOCK_LABEL_PREFIX",
    "FAULT_ANNOTATION",
    "NETWORK_POLICY_LIMITS",
    "RECORD_ANNOTATION_PREFIX",
    "TARGET",
    "ChangeRecord",
    "Direction",
    "KubeFaults",
    "KubeHost",
    "ObjectRef",
    "VolumeBound",
    "quantity_bytes",
]

log = logging.getLogger("pytest_resilience.targets.kubernetes")


class KubeFaults(KubeNetworkBlock, KubeDiskFill, KubeMarks):
    """Fault primitives mixed into :class:`~.target.KubernetesTarget`.

    The seam's primitives (:class:`~..base.FaultPrimitives`) pick the pods and call the
    per-pod ones (``block_pod_network``, ``fill_pod_disk``, ``stress_pod_memory``,
    ``fail_node``), putting each record in the fault's :class:`~..base.ChangeLog` once its
    objects are annotated: a kill in between is found again by :meth:`undo_unrecorded`.
    """

    # ------------------------------------------------------------ the seam

    def network_block(
        self: KubeHost,
        selector: str | Mapping[str, str] | None,
        *,
        port: int | None,
        direction: Direction,
        action: Literal["drop", "reject"],
        name: str,
        changes: ChangeLog,
    ) -> None:
        """Block each matching pod's traffic in its own network namespace (ephemeral
        container with iptables; a NetworkPolicy where ephemeral containers are refused)."""
        if selector is None:
            raise FaultError(
                "network_block on kubernetes needs a pod selector (e.g. 'app=postgres'); "
                "port= alone names no pod"
            )
        for pod in self.select(selector):
            changes.put(
                self.block_pod_network(
                    pod,
                    ledger_id=changes.ledger_id,
                    ports=[port] if port else (),
                    direction=direction,
                    action=action,
                    changes=changes,
                )
            )
        changes.complete = True

    def disk_fill(
        self: KubeHost, workload: str, *, percent: float, path: str | None, changes: ChangeLog
    ) -> None:
        """Fill the volume behind ``path`` (default: the first writable mount) in every pod of
        ``workload`` up to ``percent`` of the *volume*: an emptyDir's ``sizeLimit`` or a
        PVC's capacity, its usage by ``du`` (as the kubelet counts it). Never ``df``: on an
        emptyDir that is the node's disk. A volume without a bound is refused."""
        for pod in _workload_pods(self, workload):
            container, directory, bound, used = _measure_volume(self, pod, path)
            if used is None:  # dry run: nothing measured, nothing written
                size_mb = 1
            else:
                size_mb = math.ceil((bound.bytes * percent / 100 - used) / 2**20)
                if size_mb <= 0:
                    log.info("disk_fill: %s already at %g%% of %s", pod.name, percent, bound.what)
                    continue
            log.info("disk_fill: %s: %s %s", pod.name, bound.what, bound.kubelet)
            changes.put(
                self.fill_pod_disk(
                    pod,
                    ledger_id=changes.ledger_id,
                    path=directory,
                    size_mb=size_mb,
                    container=container,
                    changes=changes,
                    bound=bound,
                )
            )
        changes.complete = True

    def volume_usage(self: KubeHost, workload: str, *, path: str | None = None) -> float | None:
        """``du`` of the volume against its sizeLimit or claim, the fullest pod: what the
        kubelet's eviction manager measures for an emptyDir. Costs a pod read and an exec
        per pod of the workload; None in a dry run (nothing exec'd)."""
        shares: list[float] = []
        for pod in _workload_pods(self, workload):
            *_, bound, used = _measure_volume(self, pod, path)
            if used is not None and bound.bytes:
                shares.append(used / bound.bytes)
        return max(shares) if shares else None

    def memory_stress(
        self: KubeHost,
        selector: str | Mapping[str, str],
        *,
        share: float,
        mb: int | None,
        hold: bool,
        count: int | None,
        changes: ChangeLog,
    ) -> None:
        """Hold ``mb`` MiB in every matching pod (a workload name or a label selector);
        the undo kills the holder. No pod memory usage is read here, so ``share`` cannot
        be turned into bytes: ``mb`` is required."""
        if mb is None:
            raise FaultError(
                f"memory_stress on kubernetes: the target reports no pod memory usage, so "
                f"{share:.0%} of the limit cannot be computed; give mb=<MiB to add>"
            )
        pods = _workload_pods(self, selector)
        for pod in pods[:count] if count else pods:
            changes.put(
                self.stress_pod_memory(
                    pod,
                    ledger_id=changes.ledger_id,
                    mb=mb,
                    duration_s=3600.0 if hold else 0.0,
                    changes=changes,
                )
            )
        changes.complete = True

    def node_failure(self: KubeHost, node: str, *, changes: ChangeLog) -> None:
        """Cordon the node and evict its pods (Eviction API, PodDisruptionBudgets honoured)."""
        changes.put(self.fail_node(node, ledger_id=changes.ledger_id, changes=changes))
        changes.complete = True

    def undo_unrecorded(self: KubeHost, ledger_id: str, *, made_on: str) -> int:
        """Undo what the annotations say ``ledger_id`` changed (a fault killed between
        annotating an object and its record reaching the ledger)."""
        if made_on != TARGET:
            raise FaultError(
                f"this fault was injected on the {made_on!r} target: revert it with "
                f"`pytest --chaos-cleanup --chaos-target={made_on}`"
            )
        found = [r for r in self.find_marked() if r.ledger_id == ledger_id]
        for record in found:
            log.info("undoing %s on %s, marked by a half-done inject", record.kind, record.objects)
            self.undo(record)
        return len(found)

    # ----------------------------------------------------------------- memory

    def stress_pod_memory(
        self: KubeHost,
        pod: Pod,
        *,
        ledger_id: str,
        mb: int,
        duration_s: float = 300.0,
        container: str | None = None,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord:
        """Start a background process in the pod that touches ``mb`` MiB and holds it for
        ``duration_s`` (needs ``python3`` in the container); undo kills it."""
        self.policy.check_namespace(pod.namespace)
        if mb <= 0:
            raise FaultError(f"memory_stress: mb must be > 0, got {mb}")
        pidfile = f"/tmp/.pytest-resilience-mem-{_short(ledger_id)}.pid"
        record = ChangeRecord(
            kind="memory_stress",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Pod", pod.name, pod.namespace),),
            detail={"container": container, "pidfile": pidfile, "mb": mb},
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record)
        hog = (
            f"import time; b = bytearray(b'\\x01') * ({int(mb)} << 20); "
            f"time.sleep({float(duration_s)})"
        )
        script = (
            "command -v python3 >/dev/null || { echo 'python3 not found' >&2; exit 127; }; "
            f"nohup python3 -c {shlex.quote(hog)} >/dev/null 2>&1 & echo $! > {pidfile}"
        )
        result = self.exec(pod, ["sh", "-c", script], container=container)
        if result.exit_code != 0:
            self._unmark(record)
            _drop(changes, record)
            raise FaultError(
                f"memory_stress in {pod.namespace}/{pod.name} failed (exit {result.exit_code}): "
                f"{result.stderr.strip()}"
            )
        return record

    # -------------------------------------------------------------------- node

    def fail_node(
        self: KubeHost,
        node: str,
        *,
        ledger_id: str,
        timeout: float = 120.0,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord:
        """Take a node out: cordon, then drain through the Eviction API."""
        was = bool(self._node_raw(node).get("spec", {}).get("unschedulable", False))
        record = ChangeRecord(
            kind="node_failure",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Node", node),),
            detail={"was_unschedulable": was},
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record)
        evicted = self.drain(node, timeout=timeout)
        return ChangeRecord(
            kind=record.kind,
            ledger_id=ledger_id,
            context=self.context,
            objects=record.objects,
            detail={
                "was_unschedulable": was,
                "evicted": [f"{p.namespace}/{p.name}" for p in evicted],
            },
            dry_run=self.dry_run,
            target=TARGET,
        )

    # -------------------------------------------------------------------- undo

    def undo(self: KubeHost, record: ChangeRecord | Mapping[str, Any]) -> str | None:
        """Revert one record; idempotent, and an object already gone counts as reverted."""
        if not isinstance(record, ChangeRecord):
            record = ChangeRecord.from_dict(record)
        if record.target != TARGET:
            raise FaultError(
                f"record {record.ledger_id} was made on the {record.target!r} target: undo it "
                f"with `pytest --chaos-cleanup --chaos-target={record.target}`"
            )
        if record.context and record.context != self.context:
            raise FaultError(
                f"record {record.ledger_id} was made on context {record.context!r}, this target "
                f"is on {self.context!r}: undo it with --kube-context {record.context}"
            )
        for ref in record.objects:
            if ref.namespace:
                self.policy.check_namespace(ref.namespace)
        pod_ref = next((o for o in record.objects if o.kind == "Pod"), None)
        pod = (
            Pod(name=pod_ref.name, workload="", namespace=pod_ref.namespace or "")
            if pod_ref
            else None
        )
        d = record.detail
        reason: str | None = None
        if record.kind == "network_block" and d.get("method") == "networkpolicy" and pod:
            with contextlib.suppress(KubeNotFound):
                self._change(
                    f"DELETE networkpolicy {pod.namespace}/{d['policy']}",
                    self._net.delete_namespaced_network_policy,
                    d["policy"],
                    pod.namespace,
                    verb="delete",
                    resource="networkpolicies",
                    namespace=pod.namespace,
                    name=d["policy"],
                )
        elif record.kind == "network_block" and pod:
            reason = self._ephemeral_never_ran(pod, str(d["container"]))
            if reason is None:
                self._exec_undo(pod, _iptables_revert(d["chains"]), d["container"])
        elif record.kind == "disk_fill" and pod:
            self._exec_undo(pod, f"rm -f {shlex.quote(d['file'])}", d.get("container"))
        elif record.kind == "memory_stress" and pod:
            f = shlex.quote(d["pidfile"])
            script = f"test -f {f} && kill $(cat {f}) 2>/dev/null; rm -f {f}; true"
            self._exec_undo(pod, script, d.get("container"))
        elif record.kind == "node_failure":
            if not d.get("was_unschedulable"):
                with contextlib.suppress(KubeNotFound):
                    self.uncordon(record.objects[0].name)
        else:
            raise FaultError(f"undo: unknown change record kind {record.kind!r}")
        self._unmark(record)
        return reason

    def _exec_undo(self: KubeHost, pod: Pod, script: str, container: str | None) -> None:
        try:
            result = self.exec(pod, ["sh", "-c", script], container=container)
        except KubeNotFound:
            return  # the pod is gone, and the fault with it
        if result.exit_code != 0:
            raise FaultError(
                f"undo in {pod.namespace}/{pod.name}: {script!r} exited {result.exit_code}: "
                f"{result.stderr.strip()}"
            )
