"""Fault primitives on a Kubernetes cluster, each undoable from its record alone.

Each primitive makes a :class:`~.base.ChangeRecord`: what was changed (pods, nodes,
NetworkPolicies) and what the undo needs (container, chain, file, previous state). It goes
into the fault's :class:`~.base.ChangeLog` (the ledger) *before* the object is touched, so
``undo(record)`` reverts it in another process, after a crash, on another machine; an
undo of what never happened (a container never added or never started) closes it, saying
so. Then every changed object is annotated with ``pytest-resilience/fault: <ledger ids>``
and ``pytest-resilience/record-<hash>: <record JSON>``; ``find_marked()`` reads them
back, so a cleanup without the ledger file still finds what to revert.

Network block: an ephemeral container with NET_ADMIN shares the pod's network namespace
and holds iptables chains of ours. Ephemeral containers cannot be removed, so the undo
deletes the chains by exec in that same container (which then just sleeps). Where
ephemeral containers are refused (old cluster: 404; PodSecurity forbids NET_ADMIN: 403;
invalid: 422), or its image cannot be pulled (ErrImagePull/ImagePullBackOff: given up at
once, not waited out), a deny-all NetworkPolicy on a label only this pod carries is the
fallback. It blocks the whole direction (NetworkPolicy cannot deny single ports) and,
under kind's kube-network-policies, only new connections (``NETWORK_POLICY_LIMITS``).

Size: over 500 lines because the four primitive families share the marking and record code
below; one module per family is issue 14's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

from ..errors import FaultError, SelectorMatchedNothing
from .base import ChangeLog, ChangeRecord, ObjectRef, Pod
from .kube_api import KubeForbidden, KubeInvalid, KubeNotFound
from .kube_safety import ChaosPolicy

__all__ = [
    "FAULT_ANNOTATION",
    "RECORD_ANNOTATION_PREFIX",
    "ChangeRecord",
    "KubeFaults",
    "ObjectRef",
]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

FAULT_ANNOTATION = "pytest-resilience/fault"
RECORD_ANNOTATION_PREFIX = "pytest-resilience/record-"
BLOCK_LABEL_PREFIX = "pytest-resilience/block-"
TARGET = "kubernetes"
#: what the NetworkPolicy fallback does not do (kind's kube-network-policies and most
#: CNIs enforce policies on new connections only: conntrack keeps established ones)
NETWORK_POLICY_LIMITS = (
    "a NetworkPolicy only cuts new connections under kind's kube-network-policies (and most "
    "CNIs): established ones, such as a pooled database connection, keep flowing; and it "
    "blocks the whole direction, not single ports"
)
#: an ephemeral container's waiting reasons that no wait will cure (kubelet images.go)
_PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


class _ImageNotPulled(FaultError):
    """The network-block container's image cannot be pulled: fall back, do not wait."""


Direction = Literal["egress", "ingress", "both"]


class _KubeHost(Protocol):
    """What the primitives use of the target they are mixed into (no import of it: the
    target imports this module)."""

    name: str
    policy: ChaosPolicy
    context: str
    namespace: str
    dry_run: bool
    net_image: str
    _core: Any
    _net: Any

    def pods(
        self, selector: str | Mapping[str, str] = "", *, namespace: str | None = None
    ) -> list[Pod]: ...
    def select(
        self, selector: str | Mapping[str, str], *, namespace: str | None = None
    ) -> list[Pod]: ...
    def exec(
        self, pod: Pod, argv: Sequence[str], *, timeout: float = 30.0, container: str | None = None
    ) -> Any: ...
    def drain(self, node: str, *, timeout: float = 120.0) -> list[Pod]: ...
    def uncordon(self, node: str) -> None: ...
    def _read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]: ...
    def _read_pod(self, name: str, namespace: str) -> dict[str, Any]: ...
    def _change(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...
    def _watch_until(self, *args: Any, **kwargs: Any) -> Mapping[str, Any] | None: ...
    def _node_raw(self, node: str) -> dict[str, Any]: ...
    def _patch_meta(
        self, kind: str, name: str, namespace: str | None, meta: Mapping[str, Any]
    ) -> None: ...
    # the mixin's own methods, called on the host
    def _mark(self, record: ChangeRecord, *, extra_labels: Mapping[str, str] = ...) -> None: ...
    def _unmark(self, record: ChangeRecord) -> None: ...


class KubeFaults:
    """Fault primitives mixed into :class:`~.kubernetes.KubernetesTarget`.

    The seam's primitives (:class:`~.base.FaultPrimitives`) pick the pods and call the
    per-pod ones (``block_pod_network``, ``fill_pod_disk``, ``stress_pod_memory``,
    ``fail_node``), putting each record in the fault's :class:`~.base.ChangeLog` once its
    objects are annotated: a kill in between is found again by :meth:`undo_unrecorded`.
    """

    # ------------------------------------------------------------ the seam

    def network_block(
        self: _KubeHost,
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
                self.block_pod_network(  # type: ignore[attr-defined]
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
        self: _KubeHost, workload: str, *, percent: float, path: str | None, changes: ChangeLog
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
                self.fill_pod_disk(  # type: ignore[attr-defined]
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

    def volume_usage(self: _KubeHost, workload: str, *, path: str | None = None) -> float | None:
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
        self: _KubeHost,
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
                self.stress_pod_memory(  # type: ignore[attr-defined]
                    pod,
                    ledger_id=changes.ledger_id,
                    mb=mb,
                    duration_s=3600.0 if hold else 0.0,
                    changes=changes,
                )
            )
        changes.complete = True

    def node_failure(self: _KubeHost, node: str, *, changes: ChangeLog) -> None:
        """Cordon the node and evict its pods (Eviction API, PodDisruptionBudgets honoured)."""
        changes.put(self.fail_node(node, ledger_id=changes.ledger_id, changes=changes))  # type: ignore[attr-defined]
        changes.complete = True

    def undo_unrecorded(self: _KubeHost, ledger_id: str, *, made_on: str) -> int:
        """Undo what the annotations say ``ledger_id`` changed (a fault killed between
        annotating an object and its record reaching the ledger)."""
        if made_on != TARGET:
            raise FaultError(
                f"this fault was injected on the {made_on!r} target: revert it with "
                f"`pytest --chaos-cleanup --chaos-target={made_on}`"
            )
        found = [r for r in self.find_marked() if r.ledger_id == ledger_id]  # type: ignore[attr-defined]
        for record in found:
            log.info("undoing %s on %s, marked by a half-done inject", record.kind, record.objects)
            self.undo(record)  # type: ignore[attr-defined]
        return len(found)

    # ---------------------------------------------------------------- network

    def block_pod_network(
        self: _KubeHost,
        pod: Pod,
        *,
        ledger_id: str,
        ports: Sequence[int] = (),
        hosts: Sequence[str] = (),
        direction: Direction = "both",
        action: Literal["drop", "reject"] = "drop",
        timeout: float = 60.0,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord:
        """Drop (or reject) the pod's traffic (to/from ``ports``/``hosts``; everything but
        loopback if neither is given) in ``direction``. ``changes`` gets the record before
        the pod is touched (each per-pod primitive takes it the same way)."""
        self.policy.check_namespace(pod.namespace)
        if direction not in ("egress", "ingress", "both"):
            raise FaultError(
                f"network_block: direction must be egress, ingress or both: {direction!r}"
            )
        if action not in ("drop", "reject"):
            raise FaultError(f"network_block: action must be drop or reject: {action!r}")
        key = _short(ledger_id)
        container = f"chaos-net-{key}"
        chains = {"in": f"PRC-{key}-I", "out": f"PRC-{key}-O"}
        record = ChangeRecord(
            kind="network_block",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Pod", pod.name, pod.namespace),),
            detail={
                "method": "ephemeral",
                "container": container,
                "chains": chains,
                "ports": list(ports),
                "hosts": list(hosts),
                "direction": direction,
                "action": action,
            },
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record)
        try:
            self._add_ephemeral(pod, container)
        except (KubeNotFound, KubeForbidden, KubeInvalid) as refusal:
            if isinstance(refusal, KubeNotFound) and refusal.resource == "pods":
                raise
            log.warning("ephemeral containers refused (%s); falling back to NetworkPolicy", refusal)
            self._unmark(record)
            _drop(changes, record)
            return self._network_policy_block(  # type: ignore[attr-defined]
                pod, ledger_id, direction, refusal, changes=changes
            )
        try:
            self._wait_container_running(pod, container, timeout)
        except _ImageNotPulled as pull:
            # the container stays Waiting (it cannot be removed) and never wrote a rule
            log.warning("%s; falling back to NetworkPolicy: %s", pull, NETWORK_POLICY_LIMITS)
            self._unmark(record)
            _drop(changes, record)
            return self._network_policy_block(  # type: ignore[attr-defined]
                pod, ledger_id, direction, pull, changes=changes
            )
        script = _iptables_apply(chains, ports, hosts, direction, action.upper())
        result = self.exec(pod, ["sh", "-c", script], container=container, timeout=timeout)
        if result.exit_code != 0:
            self.exec(pod, ["sh", "-c", _iptables_revert(chains)], container=container)
            self._unmark(record)
            _drop(changes, record)
            raise FaultError(
                f"network_block: iptables in {pod.namespace}/{pod.name} exited "
                f"{result.exit_code}: {result.stderr.strip() or result.stdout.strip()}"
            )
        return record

    def _add_ephemeral(self: _KubeHost, pod: Pod, container: str) -> None:
        current = self._read_pod(pod.name, pod.namespace)
        existing = list(current.get("spec", {}).get("ephemeralContainers") or ())
        if any(c.get("name") == container for c in existing):
            return  # re-run of the same ledger entry: already there
        holder = {
            "name": container,
            "image": self.net_image,
            "command": ["sleep", "2147483647"],
            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
        }
        self._change(
            f"PATCH pod {pod.namespace}/{pod.name}/ephemeralcontainers add {container} (NET_ADMIN)",
            self._core.patch_namespaced_pod_ephemeralcontainers,
            pod.name,
            pod.namespace,
            {"spec": {"ephemeralContainers": [*existing, holder]}},
            verb="patch",
            resource="pods/ephemeralcontainers",
            namespace=pod.namespace,
            name=pod.name,
        )

    def _wait_container_running(self: _KubeHost, pod: Pod, container: str, timeout: float) -> None:
        if self.dry_run:
            return

        def state(o: Mapping[str, Any]) -> Mapping[str, Any]:
            for s in o.get("status", {}).get("ephemeralContainerStatuses") or ():
                if s.get("name") == container:
                    return s.get("state") or {}
            return {}

        def settled(o: Mapping[str, Any]) -> bool:
            waiting = state(o).get("waiting") or {}
            return bool(
                state(o).get("running")
                or state(o).get("terminated")
                or waiting.get("reason") in _PULL_FAILURES
            )

        found = self._watch_until(
            self._core.list_namespaced_pod,
            lambda o: o["metadata"]["name"] == pod.name,
            settled,
            field_selector=f"metadata.name={pod.name}",
            resource="pods",
            namespace=pod.namespace,
            remaining=timeout,
            list_first=True,
        )
        waiting = (state(found) if found else {}).get("waiting") or {}
        if waiting.get("reason") in _PULL_FAILURES:
            raise _ImageNotPulled(
                f"network_block: the node cannot pull {self.net_image} for the ephemeral "
                f"container {container} in {pod.namespace}/{pod.name} ({waiting.get('reason')}: "
                f"{waiting.get('message', '')}); preload it (kind load docker-image "
                f"{self.net_image}) or give the target another (net_image=)"
            )
        if found is None or not state(found).get("running"):
            raise FaultError(
                f"network_block: ephemeral container {container} in {pod.namespace}/{pod.name} "
                f"is not running after {timeout}s "
                f"({dict(state(found)) if found else 'no status'}); "
                f"can the node pull {self.net_image}?"
            )

    def _network_policy_block(
        self: _KubeHost,
        pod: Pod,
        ledger_id: str,
        direction: Direction,
        refusal: Exception,
        *,
        changes: ChangeLog | None = None,
    ) -> ChangeRecord:
        key = _short(ledger_id)
        label = BLOCK_LABEL_PREFIX + key
        policy = f"pytest-resilience-block-{key}"
        record = ChangeRecord(
            kind="network_block",
            ledger_id=ledger_id,
            context=self.context,
            objects=(
                ObjectRef("Pod", pod.name, pod.namespace),
                ObjectRef("NetworkPolicy", policy, pod.namespace),
            ),
            detail={
                "method": "networkpolicy",
                "policy": policy,
                "label": label,
                "direction": direction,
                "why": str(refusal)[:300],
                "limits": NETWORK_POLICY_LIMITS,
            },
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record, extra_labels={label: "true"})
        types = {"egress": ["Egress"], "ingress": ["Ingress"], "both": ["Ingress", "Egress"]}
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": policy,
                "namespace": pod.namespace,
                "labels": {"app.kubernetes.io/managed-by": "pytest-resilience"},
                "annotations": {
                    FAULT_ANNOTATION: ledger_id,
                    RECORD_ANNOTATION_PREFIX + key: json.dumps(record.to_dict()),
                },
            },
            "spec": {
                "podSelector": {"matchLabels": {label: "true"}},
                "policyTypes": types[direction],
            },
        }
        self._change(
            f"CREATE networkpolicy {pod.namespace}/{policy} deny {direction} for pod {pod.name}",
            self._net.create_namespaced_network_policy,
            pod.namespace,
            body,
            verb="create",
            resource="networkpolicies",
            namespace=pod.namespace,
            name=policy,
        )
        return record

    # ------------------------------------------------------------ disk, memory

    def volume_mounts(
        self: _KubeHost, pod: Pod, obj: Mapping[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        """``(container, mountPath)`` of the pod's writable volume mounts, in spec order;
        the service account token and other read-only mounts are left out."""
        if obj is None:
            obj = self._read_pod(pod.name, pod.namespace)
        return [
            (c.get("name", ""), m["mountPath"])
            for c in obj.get("spec", {}).get("containers") or ()
            for m in c.get("volumeMounts") or ()
            if m.get("mountPath")
            and not m.get("readOnly")
            and not m["mountPath"].startswith("/var/run/secrets/")
        ]

    def volume_bound(
        self: _KubeHost,
        pod: Pod,
        obj: Mapping[str, Any],
        container: str | None,
        directory: str,
    ) -> VolumeBound:
        """What bounds the volume holding ``directory``: an emptyDir's ``sizeLimit`` (the
        kubelet evicts the pod past it) or a PVC's capacity (writes fail with ENOSPC).
        Anything else would be filled against the node's disk: refused, saying so."""
        spec = obj.get("spec") or {}
        mounts = [
            (m.get("mountPath", ""), m.get("name", ""))
            for c in spec.get("containers") or ()
            if container is None or c.get("name") == container
            for m in c.get("volumeMounts") or ()
            if m.get("mountPath") and PurePosixPath(directory).is_relative_to(m["mountPath"])
        ]
        where = f"pod {pod.namespace}/{pod.name}"
        if not mounts:
            raise FaultError(
                f"disk_fill: {directory} is on no volume of {where}, i.e. on the container's "
                "root filesystem (the node's disk, counted against ephemeral-storage): give a "
                "path on an emptyDir with a sizeLimit or on a PersistentVolumeClaim"
            )
        mount, name = max(mounts, key=lambda m: len(m[0]))  # the innermost mount
        volume = next((v for v in spec.get("volumes") or () if v.get("name") == name), {})
        if "emptyDir" in volume:
            limit = (volume.get("emptyDir") or {}).get("sizeLimit")
            if not limit:
                raise FaultError(
                    f"disk_fill: emptyDir {name!r} has no sizeLimit in {where}: it shares the "
                    "node's disk, so a percentage of it would be a percentage of the node's "
                    f"disk; give the volume a sizeLimit (emptyDir: {{sizeLimit: 512Mi}})"
                )
            return VolumeBound(
                mount,
                quantity_bytes(limit),
                f"emptyDir {name} sizeLimit {limit}",
                f"the kubelet evicts the pod once the volume's usage exceeds its sizeLimit "
                f"{limit} (its replacement starts with an empty {name})",
            )
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            pvc = self._read(
                self._core.read_namespaced_persistent_volume_claim,
                claim,
                pod.namespace,
                verb="get",
                resource="persistentvolumeclaims",
                namespace=pod.namespace,
                name=claim,
            )
            size = (pvc.get("status") or {}).get("capacity", {}).get("storage") or (
                (pvc.get("spec") or {}).get("resources", {}).get("requests", {}).get("storage")
            )
            if not size:
                raise FaultError(f"disk_fill: PersistentVolumeClaim {claim!r} states no size")
            return VolumeBound(
                mount,
                quantity_bytes(size),
                f"PersistentVolumeClaim {claim} capacity {size}",
                "no eviction: at its capacity the app's writes fail with ENOSPC (no space left "
                "on device)",
            )
        kind = next((k for k in volume if k != "name"), "unknown")
        raise FaultError(
            f"disk_fill: volume {name!r} of {where} is a {kind}, which has no size of its own "
            "to fill against; use an emptyDir with a sizeLimit or a PersistentVolumeClaim"
        )

    def volume_used(
        self: _KubeHost, pod: Pod, mount: str, *, container: str | None = None
    ) -> int | None:
        """Bytes in the volume at ``mount`` (``du -sk``, what the kubelet's eviction
        manager measures for an emptyDir); None in a dry run, where nothing is exec'd."""
        result = self.exec(pod, ["du", "-sk", mount], container=container)
        if self.dry_run:
            return None
        try:
            return int(result.stdout.split()[0]) * 1024
        except (IndexError, ValueError):
            raise FaultError(
                f"disk_fill: du -sk {mount} in {pod.namespace}/{pod.name} exited "
                f"{result.exit_code} with no size ({result.stderr.strip() or result.stdout!r}); "
                "does the container have du?"
            ) from None

    def fill_pod_disk(
        self: _KubeHost,
        pod: Pod,
        *,
        ledger_id: str,
        path: str,
        size_mb: int,
        container: str | None = None,
        changes: ChangeLog | None = None,
        bound: VolumeBound | None = None,
    ) -> ChangeRecord:
        """``fallocate`` a file of ``size_mb`` in ``path`` (a volume mount) inside the pod;
        running out of space on the way counts as filled. ``bound`` (what it was sized
        against, what the kubelet does at the limit) goes into the record."""
        self.policy.check_namespace(pod.namespace)
        if size_mb <= 0:
            raise FaultError(f"disk_fill: size_mb must be > 0, got {size_mb}")
        target = f"{path.rstrip('/') or ''}/.pytest-resilience-fill-{_short(ledger_id)}"
        record = ChangeRecord(
            kind="disk_fill",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Pod", pod.name, pod.namespace),),
            detail={
                "container": container,
                "file": target,
                "size_mb": size_mb,
                **({"limit": bound.what, "kubelet": bound.kubelet} if bound else {}),
            },
            dry_run=self.dry_run,
            target=TARGET,
        )
        _ahead(changes, record)
        self._mark(record)
        f = shlex.quote(target)
        script = (
            f"fallocate -l {size_mb}M {f} 2>/dev/null || "
            f"{{ dd if=/dev/zero of={f} bs=1M count={size_mb} 2>/dev/null; test -s {f}; }}"
        )
        result = self.exec(pod, ["sh", "-c", script], container=container)
        if result.exit_code != 0:
            self._unmark(record)
            _drop(changes, record)
            raise FaultError(
                f"disk_fill: could not write {target} in {pod.namespace}/{pod.name} (exit "
                f"{result.exit_code}): {result.stderr.strip()}; is {path!r} a writable mount?"
            )
        return record

    def stress_pod_memory(
        self: _KubeHost,
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
        self: _KubeHost,
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

    def undo(self: _KubeHost, record: ChangeRecord | Mapping[str, Any]) -> str | None:
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
            reason = self._ephemeral_never_ran(pod, str(d["container"]))  # type: ignore[attr-defined]
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

    def _ephemeral_never_ran(self: _KubeHost, pod: Pod, container: str) -> str | None:
        """Why the block's container cannot have written a rule (it was never added, or
        never started: the rules are written by exec in it, which needs it running), or
        None when it runs and the chains must be deleted through it. A container that ran
        and exited may have left its rules in the pod's network namespace, with nothing to
        remove them through but replacing the pod: that is an error saying so."""
        try:
            obj = self._read_pod(pod.name, pod.namespace)
        except KubeNotFound:
            return None  # the pod is gone, and the fault with it; the exec says so too
        spec = obj.get("spec", {}).get("ephemeralContainers") or ()
        if not any(c.get("name") == container for c in spec):
            return f"its ephemeral container {container} was never added, so it wrote no rule"
        statuses = obj.get("status", {}).get("ephemeralContainerStatuses") or ()
        status = next((s for s in statuses if s.get("name") == container), {})
        state = status.get("state") or {}
        if state.get("running"):
            return None
        if not state.get("terminated") and not (status.get("lastState") or {}).get("terminated"):
            waiting = state.get("waiting") or {}
            why = waiting.get("reason") or "no status yet"
            return f"its ephemeral container {container} never started ({why}), so it wrote no rule"
        raise FaultError(
            f"network_block: ephemeral container {container} in {pod.namespace}/{pod.name} has "
            "exited, and the iptables chains it may have written stay in the pod's network "
            f"namespace until the pod is replaced: kubectl delete pod -n {pod.namespace} "
            f"{pod.name}"
        )

    def _exec_undo(self: _KubeHost, pod: Pod, script: str, container: str | None) -> None:
        try:
            result = self.exec(pod, ["sh", "-c", script], container=container)
        except KubeNotFound:
            return  # the pod is gone, and the fault with it
        if result.exit_code != 0:
            raise FaultError(
                f"undo in {pod.namespace}/{pod.name}: {script!r} exited {result.exit_code}: "
                f"{result.stderr.strip()}"
            )

    def find_marked(self: _KubeHost) -> list[ChangeRecord]:
        """Every change record annotated on pods and NetworkPolicies of the namespace and on
        nodes: what a cleanup must revert when the ledger file is not at hand."""
        # One fault may change several pods under one ledger id: one record per object.
        found: dict[tuple[str, str, tuple[ObjectRef, ...]], ChangeRecord] = {}
        ns = self.namespace
        sources = [
            (self._core.list_namespaced_pod, (ns,), "pods", ns),
            (self._net.list_namespaced_network_policy, (ns,), "networkpolicies", ns),
            (self._core.list_node, (), "nodes", None),
        ]
        for fn, args, resource, where in sources:
            try:
                data = self._read(fn, *args, verb="list", resource=resource, namespace=where)
            except KubeNotFound:
                continue
            for obj in data.get("items") or ():
                for k, v in (obj.get("metadata", {}).get("annotations") or {}).items():
                    if k.startswith(RECORD_ANNOTATION_PREFIX):
                        try:
                            rec = ChangeRecord.from_dict(json.loads(v))
                        except (ValueError, FaultError):
                            log.warning("ignoring unreadable annotation %s on %s", k, resource)
                            continue
                        found.setdefault((rec.kind, rec.ledger_id, rec.objects), rec)
        return list(found.values())

    # ------------------------------------------------------------------ marking

    def _mark(
        self: _KubeHost, record: ChangeRecord, *, extra_labels: Mapping[str, str] = {}
    ) -> None:
        ref = record.objects[0]
        ids = self._fault_ids(ref) | {record.ledger_id}
        meta: dict[str, Any] = {
            "annotations": {
                FAULT_ANNOTATION: " ".join(sorted(ids)),
                RECORD_ANNOTATION_PREFIX + _short(record.ledger_id): json.dumps(record.to_dict()),
            }
        }
        if extra_labels:
            meta["labels"] = dict(extra_labels)
        self._patch_meta(ref.kind, ref.name, ref.namespace, meta)

    def _unmark(self: _KubeHost, record: ChangeRecord) -> None:
        ref = record.objects[0]
        try:
            ids = self._fault_ids(ref) - {record.ledger_id}
            meta: dict[str, Any] = {
                "annotations": {
                    FAULT_ANNOTATION: " ".join(sorted(ids)) or None,
                    RECORD_ANNOTATION_PREFIX + _short(record.ledger_id): None,
                }
            }
            label = record.detail.get("label")
            if label:
                meta["labels"] = {label: None}
            self._patch_meta(ref.kind, ref.name, ref.namespace, meta)
        except KubeNotFound:
            pass

    def _fault_ids(self: _KubeHost, ref: ObjectRef) -> set[str]:
        if ref.kind == "Node":
            obj = self._node_raw(ref.name)
        else:
            obj = self._read_pod(ref.name, ref.namespace)
        value = (obj.get("metadata", {}).get("annotations") or {}).get(FAULT_ANNOTATION, "")
        return set(value.split())


def _ahead(changes: ChangeLog | None, record: ChangeRecord) -> None:
    """The record reaches the ledger before the object is touched (annotated, then changed)."""
    if changes is not None:
        changes.put(record)


def _drop(changes: ChangeLog | None, record: ChangeRecord) -> None:
    """A primitive undid its own half-done change: the record describes nothing any more."""
    if changes is not None:
        changes.discard(record)


def _workload_pods(target: _KubeHost, name: str | Mapping[str, str]) -> list[Pod]:
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


def _measure_volume(
    target: _KubeHost, pod: Pod, path: str | None
) -> tuple[str | None, str, Any, int | None]:
    """(container, directory, its volume's bound, bytes used) for ``path`` in ``pod``."""
    obj = target._read_pod(pod.name, pod.namespace)
    container, directory = _fill_dir(target, pod, path, obj)
    bound = target.volume_bound(pod, obj, container, directory)  # type: ignore[attr-defined]
    used = target.volume_used(pod, bound.mount, container=container)  # type: ignore[attr-defined]
    return container, directory, bound, used


def _fill_dir(
    target: _KubeHost, pod: Pod, path: str | None, obj: Mapping[str, Any] | None = None
) -> tuple[str | None, str]:
    """(container, directory) to fill: ``path`` inside a mount, or the first writable mount."""
    mounts = target.volume_mounts(pod, obj)  # type: ignore[attr-defined]
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


@dataclass(frozen=True)
class VolumeBound:
    """The size a disk fill is measured against, and what the kubelet does at it."""

    mount: str
    bytes: int
    what: str  # e.g. "emptyDir data sizeLimit 512Mi"
    kubelet: str  # what happens at the limit


_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "": 1,
}


def quantity_bytes(quantity: Any) -> int:
    """A Kubernetes quantity (``512Mi``, ``1G``, ``1.5Gi``, ``2e9``) in bytes
    (apimachinery/pkg/api/resource/quantity.go, the suffixes storage uses)."""
    text = str(quantity).strip()
    m = re.fullmatch(r"([0-9.]+(?:[eE][0-9]+)?)([KMGTPE]i|[kMGTPE])?", text)
    if not m:
        raise FaultError(f"disk_fill: not a storage quantity: {quantity!r} (e.g. 512Mi, 1Gi)")
    return int(float(m[1]) * _SUFFIXES[m[2] or ""])


def _short(ledger_id: str) -> str:
    """A DNS-label-safe key for names (container, chain, annotation): 10 hex chars."""
    return hashlib.sha1(ledger_id.encode()).hexdigest()[:10]


def _iptables_apply(
    chains: Mapping[str, str],
    ports: Sequence[int],
    hosts: Sequence[str],
    direction: Direction,
    jump: str = "DROP",
) -> str:
    lines = ["set -e"]
    for way, hook, peer, port_flag, iface in (
        ("in", "INPUT", "-s", "--dport", "-i"),
        ("out", "OUTPUT", "-d", "--dport", "-o"),
    ):
        if direction != "both" and {"in": "ingress", "out": "egress"}[way] != direction:
            continue
        chain = chains[way]
        lines.append(f"iptables -N {chain} 2>/dev/null || iptables -F {chain}")
        matches: list[str] = []
        for host in hosts or [None]:
            for port in ports or [None]:
                m = []
                if host:
                    m.append(f"{peer} {shlex.quote(str(host))}")
                if port:
                    m.append(f"-p tcp {port_flag} {int(port)}")
                matches.append(" ".join(m))
        for m in matches:
            lines.append(f"iptables -A {chain} {m or f'! {iface} lo'} -j {jump}")
        lines.append(f"iptables -C {hook} -j {chain} 2>/dev/null || iptables -I {hook} -j {chain}")
    return "\n".join(lines)


def _iptables_revert(chains: Mapping[str, str]) -> str:
    lines = []
    for way, hook in (("in", "INPUT"), ("out", "OUTPUT")):
        chain = chains[way]
        lines.append(f"while iptables -D {hook} -j {chain} 2>/dev/null; do :; done")
        lines.append(f"iptables -F {chain} 2>/dev/null; iptables -X {chain} 2>/dev/null")
    lines.append("true")
    return "\n".join(lines)
