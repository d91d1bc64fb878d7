"""The Kubernetes API permissions the engine needs, per built-in action: least-privilege RBAC.

``serve --target kubernetes`` runs under a ServiceAccount (deploy/engine/engine.yaml). Its Role
and ClusterRole grant exactly what the actions of the shipped playbooks request through
:class:`~pytest_resilience.targets.kubernetes.KubernetesTarget`, plus the engine's own reads
(the event watches, finding an alert's target, the ``ready`` verify). The table lives next to
the actions so a new action cannot ship without saying what it needs;
tests/kubernetes/test_engine_rbac.py runs each action against the API emulator and checks
the table against the requests it really made, and the manifest's rules against the table.

Verbs are the API server's (apiserver pkg/endpoints/request/requestinfo.go): GET on a collection
is ``list``, with ``watch=true`` ``watch``; a named GET ``get``; POST ``create``; PATCH ``patch``;
DELETE ``delete``. No action execs into a pod (restart_pod deletes it: a container in
CrashLoopBackOff cannot be exec'd into), so ``pods/exec`` is not granted. ``cluster``
marks what a namespaced Role cannot grant: cluster-scoped resources (nodes) and requests
across namespaces (drain lists and evicts the node's pods wherever they live; the target
still skips the namespaces its safety policy protects, which RBAC cannot express).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["ACTIONS", "ENGINE", "Permission", "needed", "normalize", "rbac_rules"]


@dataclass(frozen=True, order=True)
class Permission:
    """One (API group, resource[/subresource], verb), namespaced or ``cluster``-wide."""

    group: str  # "" is the core group
    resource: str
    verb: str
    cluster: bool = False

    def __str__(self) -> str:
        scope = "cluster" if self.cluster else "namespace"
        return f"{self.verb} {self.group or 'core'}/{self.resource} ({scope})"


def _p(spec: str, *, cluster: bool = False) -> frozenset[Permission]:
    """``"apps deployments get,list"`` -> those permissions (``core`` for the core group)."""
    group, resource, verbs = spec.split()
    group = "" if group == "core" else group
    return frozenset(Permission(group, resource, v, cluster) for v in verbs.split(","))


_LIST_PODS = _p("core pods list")
_ADMIN_HOOK = _LIST_PODS | _p("core pods/proxy create")  # ports from the listing
#: wait_ready: the Deployment, then a watch of it (a 410 re-lists: ENGINE's list covers it)
_WAIT_READY = _p("apps deployments get,watch")

#: the engine itself: watches (pods, deployments, nodes), finding an alert's target (the
#: workloads, pods and nodes it has), the ``ready`` verify (wait_ready, then sampling)
ENGINE: frozenset[Permission] = (
    _p("core pods list,watch")
    | _p("apps deployments list,watch")
    | _p("core nodes list,watch", cluster=True)
    | _WAIT_READY
)

#: a datastore's address: its Service (``endpoint``); a NodePort also lists the nodes (ENGINE)
_ENDPOINT = _p("core services get")

#: built-in action -> what it requests on the Kubernetes target (readiness waits included)
ACTIONS: dict[str, frozenset[Permission]] = {
    # the alert's pod: deleted with its grace period; no such pod: a rollout restart
    "restart_pod": _LIST_PODS | _p("core pods delete") | _p("apps deployments patch"),
    "graceful_restart": _p("apps deployments patch"),
    "trigger_gc": _ADMIN_HOOK,
    "scale_up": _LIST_PODS
    | _p("apps deployments list")
    | _p("apps deployments/scale patch")
    | _WAIT_READY,
    "scale_down": _p("apps deployments list") | _p("apps deployments/scale patch"),
    "drain_pod": _LIST_PODS | _p("core pods delete"),
    "close_idle_connections": _ADMIN_HOOK,
    "grow_pool": _ADMIN_HOOK,
    "invalidate_cache": _ADMIN_HOOK,
    "warm_cache": _ADMIN_HOOK,
    "rollback": _p("apps deployments get,patch") | _p("apps replicasets list") | _WAIT_READY,
    "drain_and_replace_node": _LIST_PODS
    | _p("core nodes list,patch", cluster=True)
    | _p("core pods list", cluster=True)
    | _p("core pods/eviction create", cluster=True),
    # Postgres and Redis over their own protocols (engine/datastores.py): only the address
    "terminate_idle_connections": _ENDPOINT,
    "unlink_stale_keys": _ENDPOINT,
}


def needed(actions: Iterable[str]) -> frozenset[Permission]:
    """What the engine running ``actions`` needs; an action without an entry is an error (its
    permissions are unknown, so a manifest made from this would lack them)."""
    perms = set(ENGINE)
    unknown = []
    for name in actions:
        if name in ACTIONS:
            perms |= ACTIONS[name]
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(
            f"no Kubernetes permissions known for action(s) {', '.join(sorted(unknown))}: add "
            "them to ACTIONS (pytest_resilience.engine.rbac), empty if they use no API call",
            source="pytest_resilience/engine/rbac.py",
        )
    return normalize(perms)


def normalize(perms: Iterable[Permission]) -> frozenset[Permission]:
    """Drop a namespaced permission that the same cluster-wide one already grants."""
    perms = set(perms)
    wide = {(p.group, p.resource, p.verb) for p in perms if p.cluster}
    return frozenset(p for p in perms if p.cluster or (p.group, p.resource, p.verb) not in wide)


def rbac_rules(perms: Iterable[Permission], *, cluster: bool) -> list[dict[str, Any]]:
    """The Role (``cluster=False``) or ClusterRole rules granting ``perms``: one rule per
    (group, resource), verbs sorted, as they are written in deploy/engine/engine.yaml."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for p in normalize(perms):
        if p.cluster == cluster:
            verbs.setdefault((p.group, p.resource), set()).add(p.verb)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(vs)}
        for (group, resource), vs in sorted(verbs.items())
    ]
