"""Which workload or node an alert is about, from the labels real alert rules put on it.

The engine's own alerts name their target directly. Alerts from real rule sets do not:
kube-prometheus-stack's ``KubePodCrashLooping`` carries ``namespace`` and ``pod`` (and, from
the kube-state-metrics scrape, ``service``/``job``/``instance`` naming the *exporter*, which
must never be taken for the target); ``KubeDeploymentReplicasMismatch`` carries
``deployment`` (and a ``pod`` label that is kube-state-metrics' own pod); node-exporter's
filesystem alerts carry ``instance`` (``host:9100``, or the node name under kube-prometheus).

A playbook alias lists, in order, the labels that name the target and what each one names
(:class:`TargetLabel`). :func:`find_target` tries them against what the target really has,
so a label naming something the engine cannot act on (another namespace, a pod that is not
there, an exporter) is refused with a reason instead of acted on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .alerts import Alert

__all__ = ["KINDS", "Found", "Listing", "NoTarget", "TargetLabel", "find_target", "retarget"]

#: what a label's value names: a workload, a pod (its workload is acted on), a node, or a
#: host (``instance``: scheme and port dropped, then a node, workload or pod of that name)
KINDS = ("workload", "pod", "node", "host")
_INFERRED = {"pod": "pod", "node": "node", "instance": "host"}

# Pod names the controllers generate, newest naming first: Deployment
# (<name>-<pod-template-hash>-<5>), StatefulSet (<name>-<ordinal>), DaemonSet/Job (<name>-<5>).
_POD_NAME_FORMS = (
    re.compile(r"^(?P<w>.+)-[a-z0-9]{5,10}-[a-z0-9]{5}$"),
    re.compile(r"^(?P<w>.+)-\d+$"),
    re.compile(r"^(?P<w>.+)-[a-z0-9]{5}$"),
)


@dataclass(frozen=True)
class TargetLabel:
    label: str
    kind: str  # one of KINDS

    @staticmethod
    def inferred(label: str) -> TargetLabel:
        """``pod``, ``node`` and ``instance`` name what they say; any other label a workload."""
        return TargetLabel(label, _INFERRED.get(label, "workload"))

    def describe(self) -> str:
        return (
            self.label
            if _INFERRED.get(self.label, "workload") == self.kind
            else (f"{self.label} (as {self.kind})")
        )


@dataclass(frozen=True)
class Found:
    """The target an alert is about: a workload or a node, and how it was found."""

    name: str
    kind: str  # "workload" | "node"
    via: str


class NoTarget(Exception):
    """The alert names nothing the engine can act on; the message says what was tried."""


class Listing:
    """What the target has, each kind read at most once (a read may be an API call): the
    engine shares one across a batch of alerts, so an alert storm lists once, not per alert."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self._cache: dict[str, list[Any]] = {}

    def _get(self, what: str) -> list[Any]:
        if what not in self._cache:
            try:  # the core Target protocol's listings, nothing probed
                t = self._target
                listing = {"workloads": t.workloads, "pods": t.pods, "nodes": t.nodes}[what]()
                self._cache[what] = list(listing)
            except Exception as exc:  # no target, no permission, API down: nothing to act on
                raise NoTarget(
                    f"cannot list the {what} of target {_name(self._target)!r}: {exc}"
                ) from None
        return self._cache[what]

    def workloads(self) -> list[Any]:
        return self._get("workloads")

    def pods(self) -> list[Any]:
        return self._get("pods")

    def nodes(self) -> list[Any]:
        return self._get("nodes")


def _name(target: Any) -> str:
    return str(target.name)  # every Target has one (the engine's stand-in too)


def _in(namespace: str | None, obj: Any) -> bool:
    return namespace is None or getattr(obj, "namespace", namespace) == namespace


def find_target(
    alert: Alert, labels: Sequence[TargetLabel], target: Any, *, listing: Listing | None = None
) -> Found:
    """The first of ``labels`` that names a workload or node ``target`` has.

    An alert's ``namespace`` label must match the namespace of what is found: a crash loop
    in ``kube-system`` is not a reason to restart a same-named workload of the target's.
    Raises :class:`NoTarget` saying what each label named and why it was not taken.
    """
    view = listing if listing is not None else Listing(target)
    namespace = alert.labels.get("namespace") or None
    where = f" in namespace {namespace!r}" if namespace else ""
    tried: list[str] = []
    for spec in labels:
        value = alert.labels.get(spec.label, "")
        if not value:
            tried.append(f"no label {spec.label!r}")
            continue
        found = _look_up(view, spec, value, namespace)
        if found is not None:
            return found
        tried.append(f"{spec.label}={value!r}{where} is no {spec.kind} of the target")
    raise NoTarget(
        f"{alert.name} names no target the engine can act on on {_name(target)!r}: "
        + "; ".join(tried or ["the playbook lists no target labels"])
    )


def _look_up(view: Listing, spec: TargetLabel, value: str, namespace: str | None) -> Found | None:
    if spec.kind == "workload":
        return _workload(view, value, namespace, f"label {spec.label}={value!r}")
    if spec.kind == "pod":
        return _pod(view, value, namespace, spec.label)
    if spec.kind == "node":
        return _node(view, value, spec.label)
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value)
    host = re.sub(r"(:\d+)?(/.*)?$", "", host).strip("[]")
    return (
        _node(view, host, spec.label)
        or _workload(view, host, namespace, f"label {spec.label}={value!r}")
        or _pod(view, host, namespace, spec.label)
    )


def _workload(view: Listing, name: str, namespace: str | None, via: str) -> Found | None:
    for workload in view.workloads():
        if workload.name == name and _in(namespace, workload):
            return Found(workload.name, "workload", via)
    return None


def _pod(view: Listing, name: str, namespace: str | None, label: str) -> Found | None:
    for pod in view.pods():
        if pod.name == name and _in(namespace, pod) and pod.workload:
            return Found(pod.workload, "workload", f"pod {name!r} (label {label}) of it")
    # the pod may be gone already (replaced, evicted): its controller's name is in its own
    for form in _POD_NAME_FORMS:
        match = form.match(name)
        if match:
            via = f"pod name {name!r} (label {label})"
            found = _workload(view, match.group("w"), namespace, via)
            if found is not None:
                return found
    return None


def _node(view: Listing, name: str, label: str) -> Found | None:
    if any(node.name == name for node in view.nodes()):
        return Found(name, "node", f"label {label}={name!r}")
    return None


def retarget(alert: Alert, found: Found) -> Alert:
    """``alert`` about ``found``: the actions read ``target`` and the workload/node label."""
    key = "workload" if found.kind == "workload" else "node"
    labels: Mapping[str, str] = {**alert.labels, key: found.name}
    return replace(alert, target=found.name, labels=labels)
