"""Fault primitives on a Kubernetes cluster, each undoable from its record alone.

Each primitive returns a :class:`ChangeRecord`: what was changed (pods, nodes,
NetworkPolicies) and what the undo needs (container, chain, file, previous state).
``record.to_dict()`` is JSON-able, so the ledger can persist it and ``undo(record)`` can
revert it in another process, after a crash, on another machine.

Every changed object is annotated *before* the change with ``pytest-resilience/fault:
<ledger ids>`` and ``pytest-resilience/record-<hash>: <record JSON>``; ``find_marked()``
reads them back, so a cleanup without the ledger file still finds what to revert.

Network block: an ephemeral container with NET_ADMIN shares the pod's network namespace
and holds iptables chains of ours. Ephemeral containers cannot be removed, so the undo
deletes the chains by exec in that same container (which then just sleeps). Where
ephemeral containers are refused (old cluster: 404; PodSecurity forbids NET_ADMIN: 403;
invalid: 422) a deny-all NetworkPolicy on a label only this pod carries is the fallback;
NetworkPolicy cannot deny single ports, so the fallback blocks the whole direction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import FaultError
from .base import Pod
from .kube_api import KubeApiError, KubeForbidden, KubeInvalid, KubeNotFound

if TYPE_CHECKING:  # the mixin's host
    from .kubernetes import KubernetesTarget

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
Direction = Literal["egress", "ingress", "both"]


@dataclass(frozen=True)
class ObjectRef:
    kind: str  # Pod, Node, NetworkPolicy
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class ChangeRecord:
    """What one fault changed in the cluster; enough to undo it from this alone.

    ``detail`` keys by ``kind``:
    network_block: method (ephemeral|networkpolicy), container, chains | policy, label;
    disk_fill: container, file; memory_stress: container, pidfile;
    node_failure: was_unschedulable, evicted (namespace/name list).
    """

    kind: str
    ledger_id: str
    context: str
    objects: tuple[ObjectRef, ...]
    detail: Mapping[str, Any] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def key(self) -> str:
        return _short(self.ledger_id)

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
            )
        except (KeyError, TypeError) as exc:
            raise FaultError(f"not a kubernetes change record ({exc}): {dict(data)!r}") from None


class KubeFaults:
    """Fault primitives mixed into :class:`~.kubernetes.KubernetesTarget`."""

    # ---------------------------------------------------------------- network

    def network_block(
        self: KubernetesTarget,
        pod: Pod,
        *,
        ledger_id: str,
        ports: Sequence[int] = (),
        hosts: Sequence[str] = (),
        direction: Direction = "both",
        action: Literal["drop", "reject"] = "drop",
        timeout: float = 60.0,
    ) -> ChangeRecord:
        """Drop (or reject) the pod's traffic (to/from ``ports``/``hosts``; everything but
        loopback if neither is given) in ``direction``."""
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
        )
        self._mark(record)
        try:
            self._add_ephemeral(pod, container)
        except (KubeNotFound, KubeForbidden, KubeInvalid) as refusal:
            if isinstance(refusal, KubeNotFound) and refusal.resource == "pods":
                raise
            log.warning("ephemeral containers refused (%s); falling back to NetworkPolicy", refusal)
            self._unmark(record)
            return self._network_policy_block(pod, ledger_id, direction, refusal)
        self._wait_container_running(pod, container, timeout)
        script = _iptables_apply(chains, ports, hosts, direction, action.upper())
        result = self.exec(pod, ["sh", "-c", script], container=container, timeout=timeout)
        if result.exit_code != 0:
            self.exec(pod, ["sh", "-c", _iptables_revert(chains)], container=container)
            self._unmark(record)
            raise FaultError(
                f"network_block: iptables in {pod.namespace}/{pod.name} exited "
                f"{result.exit_code}: {result.stderr.strip() or result.stdout.strip()}"
            )
        return record

    def _add_ephemeral(self: KubernetesTarget, pod: Pod, container: str) -> None:
        current = self._read(
            self._core.read_namespaced_pod,
            pod.name,
            pod.namespace,
            verb="get",
            resource="pods",
            namespace=pod.namespace,
            name=pod.name,
        )
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

    def _wait_container_running(
        self: KubernetesTarget, pod: Pod, container: str, timeout: float
    ) -> None:
        if self.dry_run:
            return

        def state(o: Mapping[str, Any]) -> Mapping[str, Any]:
            for s in o.get("status", {}).get("ephemeralContainerStatuses") or ():
                if s.get("name") == container:
                    return s.get("state") or {}
            return {}

        found = self._watch_until(
            self._core.list_namespaced_pod,
            lambda o: o["metadata"]["name"] == pod.name,
            lambda o: bool(state(o).get("running") or state(o).get("terminated")),
            field_selector=f"metadata.name={pod.name}",
            resource="pods",
            namespace=pod.namespace,
            remaining=timeout,
            list_first=True,
        )
        if found is None or not state(found).get("running"):
            raise FaultError(
                f"network_block: ephemeral container {container} in {pod.namespace}/{pod.name} "
                f"is not running after {timeout}s "
                f"({dict(state(found)) if found else 'no status'}); "
                f"can the node pull {self.net_image}?"
            )

    def _network_policy_block(
        self: KubernetesTarget,
        pod: Pod,
        ledger_id: str,
        direction: Direction,
        refusal: KubeApiError,
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
            },
            dry_run=self.dry_run,
        )
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

    def volume_mounts(self: KubernetesTarget, pod: Pod) -> list[tuple[str, str]]:
        """``(container, mountPath)`` of the pod's writable volume mounts, in spec order;
        the service account token and other read-only mounts are left out."""
        obj = self._read(
            self._core.read_namespaced_pod,
            pod.name,
            pod.namespace,
            verb="get",
            resource="pods",
            namespace=pod.namespace,
            name=pod.name,
        )
        return [
            (c.get("name", ""), m["mountPath"])
            for c in obj.get("spec", {}).get("containers") or ()
            for m in c.get("volumeMounts") or ()
            if m.get("mountPath")
            and not m.get("readOnly")
            and not m["mountPath"].startswith("/var/run/secrets/")
        ]

    def disk_usage(
        self: KubernetesTarget, pod: Pod, path: str, *, container: str | None = None
    ) -> tuple[int, int] | None:
        """``(total, used)`` bytes of the filesystem holding ``path`` in the pod (``df``);
        None in a dry run, where nothing is exec'd."""
        result = self.exec(pod, ["df", "-Pk", path], container=container)
        if self.dry_run:
            return None
        lines = result.stdout.strip().splitlines()
        try:
            fields = lines[-1].split()
            total, used = int(fields[1]) * 1024, int(fields[2]) * 1024
        except (IndexError, ValueError):
            raise FaultError(
                f"disk_fill: df -Pk {path} in {pod.namespace}/{pod.name} exited "
                f"{result.exit_code} with no usage line ({result.stderr.strip() or result.stdout!r}"
                "); does the container have df and the path?"
            ) from None
        if len(lines) < 2 or total <= 0:
            raise FaultError(f"disk_fill: df -Pk {path} gave no filesystem size: {lines!r}")
        return total, used

    def disk_fill(
        self: KubernetesTarget,
        pod: Pod,
        *,
        ledger_id: str,
        path: str,
        size_mb: int,
        container: str | None = None,
    ) -> ChangeRecord:
        """``fallocate`` a file of ``size_mb`` in ``path`` (a volume mount) inside the pod;
        running out of space on the way counts as filled."""
        self.policy.check_namespace(pod.namespace)
        if size_mb <= 0:
            raise FaultError(f"disk_fill: size_mb must be > 0, got {size_mb}")
        target = f"{path.rstrip('/') or ''}/.pytest-resilience-fill-{_short(ledger_id)}"
        record = ChangeRecord(
            kind="disk_fill",
            ledger_id=ledger_id,
            context=self.context,
            objects=(ObjectRef("Pod", pod.name, pod.namespace),),
            detail={"container": container, "file": target, "size_mb": size_mb},
            dry_run=self.dry_run,
        )
        self._mark(record)
        f = shlex.quote(target)
        script = (
            f"fallocate -l {size_mb}M {f} 2>/dev/null || "
            f"{{ dd if=/dev/zero of={f} bs=1M count={size_mb} 2>/dev/null; test -s {f}; }}"
        )
        result = self.exec(pod, ["sh", "-c", script], container=container)
        if result.exit_code != 0:
            self._unmark(record)
            raise FaultError(
                f"disk_fill: could not write {target} in {pod.namespace}/{pod.name} (exit "
                f"{result.exit_code}): {result.stderr.strip()}; is {path!r} a writable mount?"
            )
        return record

    def memory_stress(
        self: KubernetesTarget,
        pod: Pod,
        *,
        ledger_id: str,
        mb: int,
        duration_s: float = 300.0,
        container: str | None = None,
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
        )
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
            raise FaultError(
                f"memory_stress in {pod.namespace}/{pod.name} failed (exit {result.exit_code}): "
                f"{result.stderr.strip()}"
            )
        return record

    # -------------------------------------------------------------------- node

    def node_failure(
        self: KubernetesTarget, node: str, *, ledger_id: str, timeout: float = 120.0
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
        )
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
        )

    # -------------------------------------------------------------------- undo

    def undo(self: KubernetesTarget, record: ChangeRecord | Mapping[str, Any]) -> None:
        """Revert one record; idempotent, and an object already gone counts as reverted."""
        if not isinstance(record, ChangeRecord):
            record = ChangeRecord.from_dict(record)
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

    def _exec_undo(self: KubernetesTarget, pod: Pod, script: str, container: str | None) -> None:
        try:
            result = self.exec(pod, ["sh", "-c", script], container=container)
        except KubeNotFound:
            return  # the pod is gone, and the fault with it
        if result.exit_code != 0:
            raise FaultError(
                f"undo in {pod.namespace}/{pod.name}: {script!r} exited {result.exit_code}: "
                f"{result.stderr.strip()}"
            )

    def find_marked(self: KubernetesTarget) -> list[ChangeRecord]:
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
        self: KubernetesTarget, record: ChangeRecord, *, extra_labels: Mapping[str, str] = {}
    ) -> None:
        ref = record.objects[0]
        ids = self._fault_ids(ref) | {record.ledger_id}
        meta: dict[str, Any] = {
            "annotations": {
                FAULT_ANNOTATION: " ".join(sorted(ids)),
                RECORD_ANNOTATION_PREFIX + record.key: json.dumps(record.to_dict()),
            }
        }
        if extra_labels:
            meta["labels"] = dict(extra_labels)
        self._patch_meta(ref.kind, ref.name, ref.namespace, meta)

    def _unmark(self: KubernetesTarget, record: ChangeRecord) -> None:
        ref = record.objects[0]
        try:
            ids = self._fault_ids(ref) - {record.ledger_id}
            meta: dict[str, Any] = {
                "annotations": {
                    FAULT_ANNOTATION: " ".join(sorted(ids)) or None,
                    RECORD_ANNOTATION_PREFIX + record.key: None,
                }
            }
            label = record.detail.get("label")
            if label:
                meta["labels"] = {label: None}
            self._patch_meta(ref.kind, ref.name, ref.namespace, meta)
        except KubeNotFound:
            pass

    def _fault_ids(self: KubernetesTarget, ref: ObjectRef) -> set[str]:
        if ref.kind == "Node":
            obj = self._node_raw(ref.name)
        else:
            obj = self._read(
                self._core.read_namespaced_pod,
                ref.name,
                ref.namespace,
                verb="get",
                resource="pods",
                namespace=ref.namespace,
                name=ref.name,
            )
        value = (obj.get("metadata", {}).get("annotations") or {}).get(FAULT_ANNOTATION, "")
        return set(value.split())


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
