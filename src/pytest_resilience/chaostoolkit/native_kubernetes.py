"""chaostoolkit-kubernetes' actions as our faults (the table is in :mod:`.native`).

Each function follows its original in chaostoolkit-kubernetes (commit 5d786b9):
``pod/actions.py`` terminate_pods and _select_pods, ``deployment/actions.py``
scale_deployment, ``node/actions.py`` drain_nodes, uncordon_node and _select_nodes; where
the target cannot do what the original does, the ``refuse`` function says so by argument.
"""

from __future__ import annotations

import math
import random
import re
import signal
from typing import TYPE_CHECKING, Any, cast

from ..errors import TargetError
from ..faults.base import FaultContext
from ..faults.pod_kill import PodKill
from ..targets.base import parse_selector
from .providers import ActivityFailed

if TYPE_CHECKING:
    from .native import _Call

OFF = "or run without --chaostoolkit-native to call the extension itself"


class _ChosenPods(PodKill):
    """pod_kill of exactly the pods terminate_pods selected (not a random ready one)."""

    def __init__(self, names: list[str], selector: str, *, sig: int) -> None:
        super().__init__(selector or "", count=max(1, len(names)), sig=sig)
        self.names = names

    def describe(self) -> str:
        return f"{self.sig.name} pod(s) {', '.join(self.names)}"

    def plan(self) -> dict[str, Any]:
        return {**super().plan(), "pods": self.names}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        pods = [p for p in ctx.target.pods(self.selector) if p.name in self.names]
        replicas = {w.name: w.replicas for w in ctx.target.workloads()}
        self._workloads = {p.workload: replicas.get(p.workload, 1) for p in pods}
        for pod in pods:
            ctx.target.kill_pod(pod, sig=self.sig)
            self.killed.append(pod.name)
        return {"killed": self.killed, "workloads": self._workloads}


def terminate_pods(call: _Call) -> list[str]:
    # chaosk8s.pod.actions.terminate_pods and its _select_pods, step by step
    qty, mode, order = call["qty"], call["mode"], call["order"]
    if qty < 0:
        raise ActivityFailed(f"Cannot select pods. Quantity '{qty}' is negative.")
    if mode not in ("fixed", "percentage"):
        raise ActivityFailed(f"Cannot select pods. Mode '{mode}' is invalid.")
    if order not in ("alphabetic", "oldest"):
        raise ActivityFailed(f"Cannot select pods. Order '{order}' is invalid.")
    call.namespace(call["ns"])
    selector = call["label_selector"] or ""
    parse_selector(selector)  # a set-based term is refused here, naming the argument
    pods = sorted(call.target.pods(selector, namespace=call["ns"]), key=lambda p: p.name)
    if call["name_pattern"]:
        pattern = re.compile(call["name_pattern"])
        pods = [p for p in pods if pattern.search(p.name)]
    if not call["all"]:
        if mode == "percentage":
            qty = math.ceil((qty * len(pods)) / 100)
        qty = min(qty, len(pods))
        pods = random.sample(pods, qty) if call["rand"] else pods[:qty]
    if not pods:
        return []  # the extension deletes nothing and says so by an empty list
    sig = signal.SIGKILL if call["grace_period"] == 0 else signal.SIGTERM
    names = [p.name for p in pods]
    call.fault(_ChosenPods(names, selector, sig=sig), ("pods", tuple(names)))
    return names


def refuse_terminate(name: str, value: Any) -> str | None:
    if name == "order" and value == "oldest":
        return f"cannot be honoured: the target does not report pods' creation times; {OFF}"
    if name == "grace_period" and value not in (-1, 0):
        return (
            "cannot be honoured: a native pod kill is SIGTERM with the pod's own grace "
            f"(grace_period -1) or SIGKILL (grace_period 0); {OFF}"
        )
    return None


def scale_deployment(call: _Call) -> None:
    from ..faults.scale import Scale

    call.namespace(call["ns"])
    name, replicas = call["name"], call["replicas"]
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        raise ActivityFailed(f"failed to scale '{name}' to {replicas} replicas: not an integer")
    for held in call.actions.held:  # back to the count before an earlier scale: its undo
        fault = held.handle.fault
        if (
            held.key == ("scale", name)
            and held.handle.active
            and cast(Scale, fault).previous == replicas  # that key is a Scale's (call.fault below)
        ):
            held.handle.revert()
            return None
    try:
        call.fault(Scale(name, replicas), ("scale", name))
    except TargetError as exc:
        raise ActivityFailed(f"failed to scale '{name}' to {replicas} replicas: {exc}") from exc
    return None  # the extension returns nothing


def _select_nodes(call: _Call) -> list[str]:
    """chaosk8s.node.actions._select_nodes for a name and for the pods' nodes."""
    names = [n.name for n in call.target.nodes()]
    if call.arguments.get("name"):
        names = [n for n in names if n == call["name"]]
    if call.arguments.get("pod_label_selector") and call.arguments.get("pod_namespace"):
        hosting = {
            p.node
            for p in call.target.pods(call["pod_label_selector"], namespace=call["pod_namespace"])
        }
        names = [n for n in names if n in hosting]
    if not names:
        raise ActivityFailed("failed to find a node that matches selector")
    if call.arguments.get("count") is not None:
        names = random.choices(names, k=call["count"])  # with repeats, as the extension
    return names


def drain_nodes(call: _Call) -> list[str]:
    from ..faults.drain import NodeDrain

    nodes = _select_nodes(call)
    call.fault(NodeDrain(nodes), ("drain", tuple(dict.fromkeys(nodes))))
    return nodes


def refuse_drain(name: str, value: Any) -> str | None:
    if name == "label_selector" and value:
        return f"cannot be honoured: the target does not report node labels; name the node, {OFF}"
    if name == "delete_pods_with_local_storage" and value is not True:
        return (
            "cannot be honoured: a native drain evicts every pod, those with local storage "
            "(emptyDir) too, as kubectl drain --delete-emptydir-data; set it to true to accept "
            f"that, {OFF}"
        )
    if name == "timeout" and value != 120:
        return f"cannot be honoured: the target's drain has its own bound (120 s); {OFF}"
    return None


def uncordon_node(call: _Call) -> list[str]:
    nodes = _select_nodes(call)
    for held in call.actions.held:  # the drains of these nodes are undone, entries closed
        if held.key[0] == "drain" and set(held.key[1]) & set(nodes) and held.handle.active:
            held.handle.revert()
    for node in nodes:  # and uncordoned as asked, whoever cordoned them
        call.target.uncordon(node)
    return nodes


def refuse_uncordon(name: str, value: Any) -> str | None:
    if name == "label_selector" and value:
        return f"cannot be honoured: the target does not report node labels; name the node, {OFF}"
    return None
