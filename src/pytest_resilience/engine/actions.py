"""Remediation actions: Python functions registered by name, called by playbook steps.

An action speaks only to the :class:`~pytest_resilience.targets.base.Target` protocol and,
for application-level fixes, to the pod's HTTP admin hooks (``POST /admin/gc`` ...). It
returns a short detail string for the record and raises to report failure. Teams add
their own with the decorator::

    @action("flush_queue")
    def flush_queue(ctx: ActionContext, *, queue: str = "jobs") -> str: ...

Register before the playbooks are loaded; an unknown name fails the load (ConfigError).
``@action(name, check=fn)`` also checks option values at load: ``fn`` gets every option
(defaults filled in) as keywords and raises ValueError naming the bad one.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import TargetError
from ..targets import pod_http
from ..targets.base import Pod, PodAdmin, Target
from .alerts import Alert, Probe
from .registry import CHECKS, REGISTRY, action, check_params

__all__ = [
    "CHECKS",
    "REGISTRY",
    "ActionContext",
    "AdminUrl",
    "action",
    "check_params",
    "default_admin_url",
]

AdminUrl = Callable[[Target, Pod], str]


def default_admin_url(target: Target, pod: Pod) -> str:
    """The Engine's default ``admin_url``: none of its own, so :meth:`ActionContext.admin`
    goes through the target's :class:`~..targets.base.PodAdmin` capability (the local
    target: the pod's private port). Give the Engine an ``admin_url(target, pod)`` to reach
    the admin hooks another way."""
    raise TargetError(
        f"no admin URL of its own for pod {pod.name!r}: the target {target.name!r} reaches "
        "admin hooks itself (PodAdmin.post_admin)"
    )


@dataclass
class ActionContext:
    """What an action may touch; ``state`` is shared by the actions of one incident."""

    target: Target
    alert: Alert
    incident_id: str
    probes: Mapping[str, Probe] = field(default_factory=dict)
    admin_url: AdminUrl = default_admin_url
    stop: threading.Event = field(default_factory=threading.Event)
    state: dict[str, Any] = field(default_factory=dict)
    http_timeout_s: float = 5.0

    @property
    def workload(self) -> str:
        return self.alert.labels.get("workload") or self.alert.target

    def pods(self) -> list[Pod]:
        """The alert's pod if it names one that still exists, else the workload's pods."""
        pods = [p for p in self.target.pods() if p.workload == self.workload]
        named = self.alert.labels.get("pod")
        chosen = [p for p in pods if p.name == named] if named else []
        if not (chosen or pods):
            raise TargetError(f"workload {self.workload!r} has no pods on {self.target.name!r}")
        return chosen or pods

    def probe(self, name: str) -> float | None:
        fn = self.probes.get(name)
        return None if fn is None else fn()

    def wait(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise TargetError("engine stopping")

    def admin(self, pod: Pod, path: str) -> dict[str, Any]:
        """POST an admin hook of ``pod``; a non-2xx answer is a failed action."""
        if self.admin_url is not default_admin_url:  # the Engine was told where they are
            url = self.admin_url(self.target, pod) + path
            body = pod_http.post(url, timeout=self.http_timeout_s)
        elif isinstance(self.target, PodAdmin):
            body = self.target.post_admin(pod, path, timeout=self.http_timeout_s)
        else:
            raise TargetError(
                f"no admin hooks reachable for pod {pod.name!r}: target {self.target.name!r} "
                "lacks the 'pod_admin' capability; give the Engine an admin_url(target, pod)"
            )
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {"result": data}

    def admin_all(self, path: str) -> list[dict[str, Any]]:
        return [self.admin(pod, path) for pod in self.pods()]

    def replicas(self) -> int:
        for w in self.target.workloads():
            if w.name == self.workload:
                return w.replicas
        raise TargetError(f"workload {self.workload!r} not found on {self.target.name!r}")


# -- built-in actions -------------------------------------------------------------------


@action("restart_pod")
def restart_pod(ctx: ActionContext) -> str:
    """Replace the alert's pod gracefully (a fresh one, its back-off reset); else restart all.

    Readiness is the verify step's job (condition ``ready``), as for every action below
    that only asks the platform for a change.
    """
    named = ctx.alert.labels.get("pod")
    pods = [p for p in ctx.target.pods() if p.workload == ctx.workload and p.name == named]
    if pods:
        ctx.target.replace_pod(pods[0])
        return f"replaced pod {pods[0].name}"
    ctx.target.restart(ctx.workload)
    return f"restarted workload {ctx.workload}"


@action("graceful_restart")
def graceful_restart(ctx: ActionContext) -> str:
    ctx.target.restart(ctx.workload)
    return f"rolling restart of {ctx.workload}"


@action("trigger_gc")
def trigger_gc(ctx: ActionContext, *, settle: float = 0.0) -> str:
    pods = ctx.pods()
    for pod in pods:
        ctx.admin(pod, "/admin/gc")
    if settle:
        ctx.wait(settle)
    return f"GC triggered on {', '.join(p.name for p in pods)}"


@action("scale_up")
def scale_up(
    ctx: ActionContext, *, by: int = 1, max_replicas: int = 20, timeout: float = 60.0
) -> str:
    current = ctx.replicas()
    ctx.state.setdefault("pods_before", [p.name for p in ctx.pods()])
    wanted = min(current + by, max_replicas)
    if wanted <= current:
        raise TargetError(f"{ctx.workload} already at max_replicas={max_replicas}")
    ctx.target.scale(ctx.workload, wanted)
    # the new pod must serve before drain_pod may take the old one away
    ctx.target.wait_ready(ctx.workload, timeout=timeout, replicas=wanted)
    return f"scaled {ctx.workload} {current} -> {wanted}"


@action("scale_down")
def scale_down(ctx: ActionContext, *, by: int = 1, min_replicas: int = 1) -> str:
    current = ctx.replicas()
    wanted = max(current - by, min_replicas)
    ctx.target.scale(ctx.workload, wanted)
    return f"scaled {ctx.workload} {current} -> {wanted}"


@action("drain_pod")
def drain_pod(ctx: ActionContext) -> str:
    """Replace the old (leaking) pod: the alert's pod, else the oldest one before scale-up."""
    pods = [p for p in ctx.target.pods() if p.workload == ctx.workload]
    names = [ctx.alert.labels.get("pod"), *ctx.state.get("pods_before", [])]
    old = next((p for name in names for p in pods if name and p.name == name), None)
    if old is None:
        raise TargetError(f"no old pod of {ctx.workload!r} left to drain")
    ctx.target.replace_pod(old)
    return f"drained pod {old.name}"


@action("close_idle_connections")
def close_idle_connections(ctx: ActionContext) -> str:
    answers = ctx.admin_all("/admin/pool/reset")
    answered = [a.get("max", a.get("pool_max")) for a in answers]
    sizes = [s for s in answered if isinstance(s, int) and not isinstance(s, bool)]
    if sizes:
        ctx.state["pool_max"] = max(sizes)
    return f"closed idle connections on {len(answers)} pod(s)"


@action("grow_pool")
def grow_pool(ctx: ActionContext, *, factor: float = 1.5, current: int | None = None) -> str:
    """Grow the pool by ``factor``; current size from the pod, the alert, or ``current``."""
    size = (
        ctx.state.get("pool_max")
        or _int(ctx.alert.labels.get("pool_max"))
        or _int(ctx.alert.annotations.get("pool_max"))
        or current
        or _int(ctx.probe("pool_max"))
    )
    if not size:
        raise TargetError("current pool size unknown: give grow_pool a 'current' parameter")
    wanted = math.ceil(size * factor)
    for pod in ctx.pods():
        ctx.admin(pod, f"/admin/pool/resize?max={wanted}")
    ctx.state["pool_max"] = wanted
    return f"pool max {size} -> {wanted}"


@action("invalidate_cache")
def invalidate_cache(ctx: ActionContext) -> str:
    return f"invalidated stale keys on {len(ctx.admin_all('/admin/cache/invalidate'))} pod(s)"


@action("warm_cache")
def warm_cache(ctx: ActionContext) -> str:
    return f"warmed hot keys on {len(ctx.admin_all('/admin/cache/warm'))} pod(s)"


@action("rollback")
def rollback(ctx: ActionContext, *, timeout: float = 60.0) -> str:
    version = ctx.target.rollback(ctx.workload)
    # Kubernetes returns once the template is patched: verify samples the old release, not
    # the bad one still rolling out (the local target's rollback has waited already)
    ctx.target.wait_ready(ctx.workload, timeout=timeout)
    return f"rolled {ctx.workload} back to {version or 'previous revision'}"


@action("drain_and_replace_node")
def drain_and_replace_node(ctx: ActionContext) -> str:
    """Cordon and drain the node; verify ``ready`` then checks every workload it held."""
    node = ctx.alert.labels.get("node") or ctx.alert.target
    if node not in {n.name for n in ctx.target.nodes()}:
        raise TargetError(f"node {node!r} not found on {ctx.target.name!r}")
    affected = sorted({p.workload for p in ctx.target.pods() if p.node == node})
    ctx.state["workloads"] = affected
    ctx.target.cordon(node)
    ctx.target.drain(node)
    return f"drained node {node}; replaced pods of {', '.join(affected) or 'nothing'}"


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# the actions that speak a datastore's own protocol (Postgres, Redis) register themselves;
# last, so the registry lists the built-ins above first, as it always has
from . import datastores as _datastores  # noqa: E402,F401
