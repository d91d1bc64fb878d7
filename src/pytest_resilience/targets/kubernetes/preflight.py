"""The doctor's view of a cluster: which context, which API server, what we may do there.

Asked before a run, so a missing RBAC verb shows as one line naming the verb instead of
a 403 in the middle of a fault. The safety policy runs first, exactly as the target
runs it: a context the policy refuses is never contacted, not even for the doctor.
Permissions come from SelfSubjectAccessReview, the API ``kubectl auth can-i`` uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ResilienceError

if TYPE_CHECKING:
    from ...settings import ChaosSettings
    from .target import KubernetesTarget

__all__ = ["NEEDED_ACCESS", "cluster_lines"]

#: (verb, resource, subresource, group, what needs it); group "" is the core API.
NEEDED_ACCESS: tuple[tuple[str, str, str, str, str], ...] = (
    ("list", "pods", "", "", "find pods by selector"),
    ("watch", "pods", "", "", "pod events"),
    ("delete", "pods", "", "", "pod_kill"),
    # exec is a websocket GET: authorized as get, and since Kubernetes 1.35 also as create
    # (AuthorizePodWebsocketUpgradeCreatePermission, kubernetes#134577)
    ("get", "pods", "exec", "", "signals, disk_fill, memory_stress, undo of network_block"),
    ("create", "pods", "exec", "", "the same, on Kubernetes 1.35 and later"),
    ("patch", "pods", "ephemeralcontainers", "", "network_block (iptables in the pod)"),
    ("get", "pods", "proxy", "", "pod metrics and readiness (GET through the pod proxy)"),
    ("create", "pods", "proxy", "", "admin hooks (POST through the pod proxy)"),
    ("get", "pods", "log", "", "what a failing pod said, in error messages"),
    ("get", "services", "", "", "where the load and the datastores are reached"),
    ("create", "pods", "eviction", "", "node_failure (drain)"),
    ("patch", "deployments", "", "apps", "bad_deploy, rollback, scale"),
    ("list", "replicasets", "", "apps", "rollback (previous revision)"),
    ("patch", "nodes", "", "", "node_failure (cordon)"),
    ("create", "networkpolicies", "", "networking.k8s.io", "network_block fallback"),
)


def cluster_lines(settings: ChaosSettings) -> list[str]:
    """Lines for ``--chaos-doctor``: context and server, the policy's verdict, each verb."""
    from .target import KubernetesTarget

    lines = ["cluster:"]
    try:
        target = KubernetesTarget(
            context=settings.kube_context, namespace=settings.namespace, allow=settings.allow
        )
    except ResilienceError as exc:
        return [*lines, f"  MISS target                   {exc}"]
    lines.append(f"  ok   context                  {target.context} at {target.conn.host}")
    allowed = f"{target.namespace} (allowed by the --chaos-allow rules)"
    lines.append(f"  ok   namespace                {allowed}")
    try:
        lines += _access_lines(target)
    finally:
        target.close()
    return lines


def _access_lines(target: KubernetesTarget) -> list[str]:
    import kubernetes.client as kc

    api = kc.AuthorizationV1Api(target.conn.api_client())
    lines = []
    for verb, resource, sub, group, why in NEEDED_ACCESS:
        review = kc.V1SelfSubjectAccessReview(
            spec=kc.V1SelfSubjectAccessReviewSpec(
                resource_attributes=kc.V1ResourceAttributes(
                    namespace=None if resource == "nodes" else target.namespace,
                    verb=verb,
                    resource=resource,
                    subresource=sub or None,
                    group=group,
                )
            )
        )
        name = f"{verb} {resource}{'/' + sub if sub else ''}"
        try:
            status = api.create_self_subject_access_review(review, _request_timeout=5).status
        except Exception as exc:  # the doctor reports every failure, it never stops at one
            lines.append(f"  ?    {name:<32} could not ask the API server: {_short(exc)}")
            continue
        if status is None:  # not an authorizer's answer (a proxy, an old aggregated API)
            lines.append(f"  ?    {name:<32} the API server's review came back without a status")
            continue
        mark = "ok  " if status.allowed else "MISS"
        fix = "" if status.allowed else f"  -> grant it in the Role for the runner ({why})"
        lines.append(f"  {mark} {name:<32} {why}{fix}")
    return lines


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]
