"""Releases on Kubernetes: ``bad_deploy`` sets the template's DEMO_VERSION (what the demo
reads, deploy/k8s/api.yaml), ``Workload.version`` reports that release, and rollback is
``kubectl rollout undo`` (previous revision's template and annotations, paused refused)."""

# ruff: noqa: F401 - pytest fixtures imported from kube_controllers
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_controllers import DEPLOYMENTS, REPLICASETS, EmulatedCluster

from pytest_resilience.errors import TargetError
from pytest_resilience.faults.base import FaultSession
from pytest_resilience.faults.deploy import BadDeploy
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.releases import plan_rollback
from pytest_resilience.timeline import Timeline

NS = "chaos-demo"
CAUSE = "kubernetes.io/change-cause"


def _with_release_env(target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    """The api as deploy/k8s/api.yaml ships it: env DEMO_VERSION=v1 (revision 2 here),
    with a change-cause annotation saying so."""
    import kubernetes.client as kc

    kc.AppsV1Api(target.conn.api_client()).patch_namespaced_deployment(
        "api",
        NS,
        [
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/env",
                "value": [
                    {"name": "PORT", "value": "8080"},
                    {"name": "DEMO_VERSION", "value": "v1"},
                ],
            },
            {"op": "add", "path": "/metadata/annotations", "value": {CAUSE: "ship v1"}},
        ],
    )
    cluster.eventually(lambda: _revision(cluster) == "2")
    target.wait_ready("api", timeout=20)


def _revision(cluster: EmulatedCluster) -> str:
    dep = cluster.obj(DEPLOYMENTS, NS, "api") or {}
    return str((dep["metadata"].get("annotations") or {}).get("deployment.kubernetes.io/revision"))


def _env(cluster: EmulatedCluster) -> dict[str, str]:
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert dep is not None
    return {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.fixture
def session(target: KubernetesTarget, tmp_path: Path) -> Iterator[FaultSession]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    s = FaultSession(target, ledger=ledger, timeline=Timeline("releases"))
    yield s
    s.revert_all()
    ledger.close_db()


def test_workload_version_is_the_release_not_the_revision(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _with_release_env(target, cluster)
    (api,) = target.workloads()
    assert api.version == "v1" and _revision(cluster) == "2"
    assert target.version("api") == "v1"
    assert {p.version for p in target.select("app=api") if p.ready} == {"v1"}


def test_rollout_sets_the_release_env_in_the_template(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _with_release_env(target, cluster)
    target.rollout("api", "v2")
    assert _env(cluster) == {"PORT": "8080", "DEMO_VERSION": "v2"}
    target.wait_ready("api", timeout=20)
    assert target.version("api") == "v2"
    assert {p.version for p in target.select("app=api") if p.ready} == {"v2"}


def test_rollout_of_a_template_without_the_env_is_a_clear_error(
    target: KubernetesTarget,
) -> None:
    with pytest.raises(TargetError, match=r"no container of its template sets env DEMO_VERSION"):
        target.rollout("api", "v2")


def test_bad_deploy_and_its_revert_on_kubernetes(
    target: KubernetesTarget, cluster: EmulatedCluster, session: FaultSession
) -> None:
    _with_release_env(target, cluster)
    handle = session.inject(BadDeploy("api", "v2"))
    assert handle.spec["previous"] == "v1"
    assert target.version("api") == "v2"
    target.wait_ready("api", timeout=20)
    handle.revert()
    assert target.version("api") == "v1"
    target.wait_ready("api", timeout=20)
    assert {p.version for p in target.select("app=api") if p.ready} == {"v1"}


def test_rollback_restores_the_previous_template_and_its_annotations(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    import kubernetes.client as kc

    _with_release_env(target, cluster)
    kc.AppsV1Api(target.conn.api_client()).patch_namespaced_deployment(
        "api", NS, {"metadata": {"annotations": {CAUSE: "ship v2"}}}
    )
    target.rollout("api", "v2")
    cluster.eventually(lambda: _revision(cluster) == "3")
    target.wait_ready("api", timeout=20)
    assert target.rollback("api") == "v1"
    dep = cluster.obj(DEPLOYMENTS, NS, "api")
    assert dep is not None
    assert _env(cluster)["DEMO_VERSION"] == "v1"
    assert dep["metadata"]["annotations"][CAUSE] == "ship v1"  # the ReplicaSet's, as kubectl
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"]["labels"]
    target.wait_ready("api", timeout=20)
    assert _revision(cluster) == "4"
    assert {p.version for p in target.select("app=api") if p.ready} == {"v1"}


def test_rollback_of_a_paused_deployment_is_refused_saying_how_to_resume(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    import kubernetes.client as kc

    _with_release_env(target, cluster)
    kc.AppsV1Api(target.conn.api_client()).patch_namespaced_deployment(
        "api", NS, {"spec": {"paused": True}}
    )
    before = len(cluster.mutating_requests())
    with pytest.raises(
        TargetError, match=r"paused deployment.*kubectl rollout resume deployment/api"
    ):
        target.rollback("api")
    assert len(cluster.mutating_requests()) == before


def test_rollback_without_history_is_a_clear_error(target: KubernetesTarget) -> None:
    with pytest.raises(TargetError, match="no rollout history found"):
        target.rollback("api")


def _rs(name: str, revision: int, version: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(revision), **annotations},
        },
        "spec": {"template": _template(version, name[-5:])},
    }


def _template(version: str, hash_: str | None = None) -> dict[str, Any]:
    labels = {"app": "api", **({"pod-template-hash": hash_} if hash_ else {})}
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [{"name": "api", "env": [{"name": "DEMO_VERSION", "value": version}]}]
        },
    }


def test_rollback_plan_follows_kubectl() -> None:
    dep = {
        "metadata": {
            "name": "api",
            "annotations": {"deployment.kubernetes.io/revision": "3", CAUSE: "ship v3"},
        },
        "spec": {"template": _template("v3")},
    }
    sets = [
        _rs("api-aaaaa", 1, "v1"),
        _rs("api-bbbbb", 2, "v2", **{CAUSE: "ship v2"}),
        _rs("api-ccccc", 3, "v3"),
    ]
    plan = plan_rollback(dep, sets)
    assert (plan.replicaset, plan.revision) == ("api-bbbbb", 2)  # second-highest revision
    assert plan.patch == [
        {"op": "replace", "path": "/spec/template", "value": _template("v2")},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {"deployment.kubernetes.io/revision": "3", CAUSE: "ship v2"},
        },
    ]
    # the template already matches the previous revision: skipped, nothing to patch
    same = {**dep, "spec": {"template": _template("v2")}}
    assert plan_rollback(same, sets).patch is None
