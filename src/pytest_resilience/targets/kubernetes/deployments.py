"""The Target API's changes of a workload (a Deployment): scale through the scale
subresource, restart as ``kubectl rollout restart`` does, a rollout of a release, and a
rollback as ``kubectl rollout undo`` (planned by :mod:`.releases`).

Every change checks the namespace rule and dry-run first (:meth:`~.calls.KubeCalls._change`).
"""

from __future__ import annotations

import datetime as _dt
import logging

from ...errors import TargetError
from ..base import EventKind, TargetEvent, match_labels
from .conversions import labels_of, selector_string
from .events import KubeEvents
from .releases import plan_rollback, release_of, release_patch

__all__ = ["KubeDeployments"]

log = logging.getLogger("pytest_resilience.targets.kubernetes")

#: what ``kubectl rollout restart`` stamps on the pod template
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


class KubeDeployments(KubeEvents):
    """``scale``, ``restart``, ``rollout`` and ``rollback`` of the Target protocol."""

    def scale(self, workload: str, replicas: int) -> None:
        """Through the scale subresource, so only the replica count is touched."""
        self.policy.check_namespace(self.namespace)
        if replicas < 0:
            raise TargetError(f"scale {workload}: replicas must be >= 0, got {replicas}")
        self._change(
            f"PATCH deployment {self.namespace}/{workload}/scale replicas={replicas}",
            self._apps.patch_namespaced_deployment_scale,
            workload,
            self.namespace,
            {"spec": {"replicas": replicas}},
            verb="patch",
            resource="deployments/scale",
            namespace=self.namespace,
            name=workload,
        )

    def restart(self, workload: str) -> None:
        """What ``kubectl rollout restart`` does: stamp the pod template."""
        self.policy.check_namespace(self.namespace)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._change(
            f"PATCH deployment {self.namespace}/{workload} template {RESTARTED_AT}={stamp}",
            self._apps.patch_namespaced_deployment,
            workload,
            self.namespace,
            patch,
            verb="patch",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def rollout(self, workload: str, version: str) -> None:
        """:class:`~..base.Releases`: set the release env (``release_env``) of the pod
        template to ``version``; the Deployment rolls it out (surge, readiness) and
        ``wait_ready`` waits for it. A JSON patch with a ``test`` of the old value, so a
        concurrent change of the template is a conflict, not overwritten."""
        self.policy.check_namespace(self.namespace)
        patch = release_patch(self._deployment(workload), self.release_env, version)
        self._change(
            f"PATCH deployment {self.namespace}/{workload} template env "
            f"{self.release_env}={version}",
            self._apps.patch_namespaced_deployment,
            workload,
            self.namespace,
            patch,
            verb="patch",
            resource="deployments",
            namespace=self.namespace,
            name=workload,
        )

    def rollback(self, workload: str) -> str:
        """``kubectl rollout undo`` (:mod:`.releases`): the previous revision's
        template and annotations; a paused Deployment is refused. Returns the release
        rolled back to (e.g. ``"v1"``; the revision number where the template has none)."""
        self.policy.check_namespace(self.namespace)
        ns = self.namespace
        dep = self._deployment(workload)
        uid = dep["metadata"].get("uid")
        match = (dep.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        sets = self._read(
            self._apps.list_namespaced_replica_set,
            ns,
            label_selector=selector_string(match),
            verb="list",
            resource="replicasets",
            namespace=ns,
        )
        owned = [
            rs
            for rs in sets.get("items") or ()
            if match_labels(labels_of(rs), match)
            and any(
                ref.get("kind") == "Deployment"
                and (
                    ref.get("uid") == uid if uid and ref.get("uid") else ref.get("name") == workload
                )
                for ref in rs["metadata"].get("ownerReferences") or ()
            )
        ]
        plan = plan_rollback(dep, owned)
        release = release_of(plan.template, self.release_env) or str(plan.revision)
        if plan.patch is None:
            log.info(
                "rollback %s/%s skipped: the template already matches revision %s (%s)",
                ns,
                workload,
                plan.revision,
                plan.replicaset,
            )
            return release
        self._change(
            f"PATCH deployment {ns}/{workload} template := ReplicaSet "
            f"{plan.replicaset} (revision {plan.revision}, release {release})",
            self._apps.patch_namespaced_deployment,
            workload,
            ns,
            plan.patch,
            verb="patch",
            resource="deployments",
            namespace=ns,
            name=workload,
        )
        self._emit(
            TargetEvent(
                EventKind.ROLLED_BACK,
                workload=workload,
                detail=f"{release} (revision {plan.revision})",
            )
        )
        return release
