"""Network block on Kubernetes: iptables in the pod's own network namespace.

An ephemeral container with NET_ADMIN shares the pod's network namespace and holds iptables
chains of ours. Ephemeral containers cannot be removed, so the undo deletes the chains by
exec in that same container (which then just sleeps). Where ephemeral containers are refused
(old cluster: 404; PodSecurity forbids NET_ADMIN: 403; invalid: 422), or its image cannot be
pulled (ErrImagePull/ImagePullBackOff: given up at once, not waited out), a deny-all
NetworkPolicy on a label only this pod carries is the fallback. It blocks the whole
direction (NetworkPolicy cannot deny single ports) and, under kind's kube-network-policies,
only new connections (``NETWORK_POLICY_LIMITS``).
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ...errors import FaultError
from ..base import ChangeLog, ChangeRecord, ObjectRef, Pod
from .api import KubeForbidden, KubeInvalid, KubeNotFound
from .fault_host import TARGET, _ahead, _drop, _short
from .marks import FAULT_ANNOTATION, RECORD_ANNOTATION_PREFIX

if TYPE_CHECKING:
    from .fault_host import KubeHost

__all__ = ["BLOCK_LABEL_PREFIX", "NETWORK_POLICY_LIMITS", "Direction", "KubeNetworkBlock"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

BLOCK_LABEL_PREFIX = "pytest-resilience/block-"
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


class KubeNetworkBlock:
    """The network half of :class:`~.faults.KubeFaults` (a mixin of the target)."""

    def block_pod_network(
        self: KubeHost,
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
            return self._network_policy_block(pod, ledger_id, direction, refusal, changes=changes)
        try:
            self._wait_container_running(pod, container, timeout)
        except _ImageNotPulled as pull:
            # the container stays Waiting (it cannot be removed) and never wrote a rule
            log.warning("%s; falling back to NetworkPolicy: %s", pull, NETWORK_POLICY_LIMITS)
            self._unmark(record)
            _drop(changes, record)
            return self._network_policy_block(pod, ledger_id, direction, pull, changes=changes)
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

    def _add_ephemeral(self: KubeHost, pod: Pod, container: str) -> None:
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

    def _wait_container_running(self: KubeHost, pod: Pod, container: str, timeout: float) -> None:
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
        self: KubeHost,
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

    def _ephemeral_never_ran(self: KubeHost, pod: Pod, container: str) -> str | None:
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
        status: Mapping[str, Any] = next((s for s in statuses if s.get("name") == container), {})
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
        every_host: Sequence[str | None] = hosts or [None]  # None: any peer
        every_port: Sequence[int | None] = ports or [None]  # None: any port
        for host in every_host:
            for port in every_port:
                parts = []
                if host:
                    parts.append(f"{peer} {shlex.quote(str(host))}")
                if port:
                    parts.append(f"-p tcp {port_flag} {int(port)}")
                matches.append(" ".join(parts))
        for match in matches:
            lines.append(f"iptables -A {chain} {match or f'! {iface} lo'} -j {jump}")
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
