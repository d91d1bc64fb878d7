"""Releases on Kubernetes: a release is a pod-template change, rollback is ``rollout undo``.

The demo reads its release from the env ``DEMO_VERSION`` (deploy/k8s/api.yaml,
demo/api.py), so :meth:`~.target.KubernetesTarget.rollout` sets that env in the
Deployment's template (as ``kubectl set env deployment/api DEMO_VERSION=v2`` would) and
``Workload.version`` reports it, not the ReplicaSet revision number. A template without
the env reports its first container's image tag.

Rollback follows kubectl's DeploymentRollbacker (kubectl pkg/polymorphichelpers/
rollback.go): the ReplicaSet with the second-highest ``deployment.kubernetes.io/revision``
is the one to go back to; a paused Deployment is refused; a template that already
matches it (ignoring ``pod-template-hash``) is skipped; otherwise one JSON patch replaces
``/spec/template`` (hash label removed) and ``/metadata/annotations`` (the Deployment's
own revision and last-applied annotations kept, the rest taken from the ReplicaSet, such
as ``kubernetes.io/change-cause``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import TargetError

__all__ = ["REVISION", "Rollback", "plan_rollback", "release_of", "release_patch", "revision"]

REVISION = "deployment.kubernetes.io/revision"
_HASH = "pod-template-hash"
#: kept from the Deployment, never copied from the ReplicaSet (rollback.go annotationsToSkip)
_ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deprecated.deployment.rollback.to",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
    }
)


def release_of(template: Mapping[str, Any] | None, env: str) -> str:
    """The release a pod template (or a pod) runs: the ``env`` value of the first
    container setting it, else the first container's image tag, else ""."""
    containers = ((template or {}).get("spec") or {}).get("containers") or ()
    for c in containers:
        for e in c.get("env") or ():
            if e.get("name") == env and "value" in e:
                return str(e["value"])
    for c in containers:
        repo, _, tag = str(c.get("image") or "").rpartition(":")
        if repo and "/" not in tag:
            return tag
    return ""


def release_patch(dep: Mapping[str, Any], env: str, version: str) -> list[dict[str, Any]]:
    """A JSON patch setting ``env`` to ``version`` in every container of the template that
    sets it; a clear error when none does (the release is then not an env of this app)."""
    name = (dep.get("metadata") or {}).get("name")
    containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or ()
    patch: list[dict[str, Any]] = []
    for i, c in enumerate(containers):
        for j, e in enumerate(c.get("env") or ()):
            if e.get("name") != env:
                continue
            if "value" not in e:
                raise TargetError(
                    f"rollout {name} {version}: env {env} of container {c.get('name')!r} comes "
                    "from valueFrom; set it as a plain value in the template"
                )
            at = f"/spec/template/spec/containers/{i}/env/{j}/value"
            patch += [
                {"op": "test", "path": at, "value": e["value"]},
                {"op": "replace", "path": at, "value": version},
            ]
    if not patch:
        raise TargetError(
            f"rollout {name} {version}: no container of its template sets env {env} (the "
            f"release the app reads); add it (e.g. - {{name: {env}, value: v1}}) or build the "
            "target with release_env= naming the env your app reads"
        )
    return patch


def revision(obj: Mapping[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


@dataclass(frozen=True)
class Rollback:
    """What ``rollout undo`` would do: ``patch`` None means skipped (already there)."""

    replicaset: str
    revision: int
    template: Mapping[str, Any]
    patch: list[dict[str, Any]] | None


def plan_rollback(dep: Mapping[str, Any], owned: Sequence[Mapping[str, Any]]) -> Rollback:
    """The rollback to the previous revision among the Deployment's ReplicaSets."""
    meta, spec = dep.get("metadata") or {}, dep.get("spec") or {}
    name = meta.get("name")
    ranked = sorted((rs for rs in owned if revision(rs) > 0), key=revision, reverse=True)
    if len(ranked) < 2:
        raise TargetError(
            f"rollback {meta.get('namespace')}/{name}: no rollout history found (revisions "
            f"{[revision(rs) for rs in ranked]}): nothing to roll back to"
        )
    if spec.get("paused"):
        raise TargetError(
            f"rollback {meta.get('namespace')}/{name}: you cannot rollback a paused deployment; "
            f"resume it first with 'kubectl rollout resume deployment/{name}' and try again"
        )
    previous = ranked[1]
    template = _without_hash(previous.get("spec", {}).get("template") or {})
    if template == _without_hash(spec.get("template") or {}):
        return Rollback(previous["metadata"]["name"], revision(previous), template, None)
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k in _ANNOTATIONS_TO_SKIP
    }
    annotations.update(
        {
            k: v
            for k, v in ((previous.get("metadata") or {}).get("annotations") or {}).items()
            if k not in _ANNOTATIONS_TO_SKIP
        }
    )
    patch = [
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ]
    return Rollback(previous["metadata"]["name"], revision(previous), template, patch)


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(template))
    labels = (copy.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(_HASH, None)
    return copy
