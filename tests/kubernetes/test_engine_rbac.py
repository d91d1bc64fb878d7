"""Least-privilege RBAC for ``serve --target kubernetes`` (deploy/engine/engine.yaml).

The permissions the engine needs are derived, not written down twice: each built-in action
of the shipped playbooks runs against the API emulator, every request it makes is turned
into the (API group, resource, verb) the API server authorizes it as (apiserver
pkg/endpoints/request/requestinfo.go), and that set must equal the action's entry in
:mod:`pytest_resilience.engine.rbac`. The manifest's Role and ClusterRole must then grant
exactly what the shipped playbooks' actions and the engine's own reads need: every rule
present, nothing more. The manifests are checked against the Kubernetes schemas
(kubernetes-validate) and the Alertmanager receiver against Alertmanager itself (amtool).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_controllers import PODS, SERVICES, EmulatedCluster, Request

from pytest_resilience.engine.actions import REGISTRY, ActionContext
from pytest_resilience.engine.alerts import Alert
from pytest_resilience.engine.playbooks import (
    BUNDLED_PLAYBOOKS,
    Condition,
    VerifySpec,
    load_playbooks,
)
from pytest_resilience.engine.rbac import ACTIONS, ENGINE, Permission, needed, normalize, rbac_rules
from pytest_resilience.engine.targeting import Listing
from pytest_resilience.engine.verify import verify
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.api import KubeApiError

ROOT = Path(__file__).resolve().parents[2]
ENGINE_YAML = ROOT / "deploy" / "engine" / "engine.yaml"
RECEIVER_YAML = ROOT / "deploy" / "engine" / "alertmanager-receiver.yaml"
NS = "shop"  # the namespace of the real KubePodCrashLooping sample
OTHER_NS = "payments"  # another team's pods on the same node (drain evicts them too)
#: actions that speak their datastore's own protocol once the target gave its address
DATASTORE_ACTIONS = ("terminate_idle_connections", "unlink_stale_keys")
#: parameters an action cannot go without here (its playbook step or an earlier action gives them)
PARAMS: dict[str, dict[str, Any]] = {
    "unlink_stale_keys": {"match": "cache:*"},
    "grow_pool": {"current": 10},
}
K8S_VERSION = (
    "1.31.0"  # kind v0.24's default node image, as tests/kubernetes/test_kubernetes_deploy.py
)


# -- what a request is authorized as ---------------------------------------------------------


def permissions_of(request: Request, namespace: str) -> set[Permission]:
    """The RBAC attributes kube-apiserver derives from one request (requestinfo.go): the
    group from the path, the verb from the method (GET on a collection is list, or watch
    with watch=true; a named GET get), ``cluster`` for a cluster-scoped resource or another
    namespace than the engine's. A websocket exec is a GET: authorized as get and, since
    1.35, also as create (KEP-4006)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        assert parts[0] == "apis", request.path
        group, rest = parts[1], parts[3:]
    ns = None
    if rest[0] == "namespaces" and len(rest) > 2:
        ns, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource += "/" + rest[2]
    method = request.method
    if method in ("GET", "HEAD"):
        watch = str(request.query.get("watch", "")).lower() not in ("", "false", "0")
        verbs = {"get"} if name else {"watch" if watch else "list"}
        if resource in ("pods/exec", "pods/attach", "pods/portforward"):
            verbs = {"get", "create"}
    else:
        verbs = {
            "POST": {"create"},
            "PUT": {"update"},
            "PATCH": {"patch"},
            "DELETE": {"delete" if name else "deletecollection"},
        }[method]
    cluster = ns is None or ns != namespace
    return {Permission(group, resource, verb, cluster) for verb in verbs}


def permissions_since(cluster: EmulatedCluster, start: int) -> frozenset[Permission]:
    perms: set[Permission] = set()
    for request in cluster.requests()[start:]:
        perms |= permissions_of(request, NS)
    return normalize(perms)


def shipped_actions() -> set[str]:
    return {
        call.name
        for book in load_playbooks(BUNDLED_PLAYBOOKS)
        for step in book.steps
        for option in step.options
        for call in option.actions
    }


# -- an emulated cluster shaped like a real one -----------------------------------------------


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    """The api Deployment (3 Ready replicas) in ``shop``, its pods declaring their admin
    port, and another namespace's pod on the first node."""
    with EmulatedCluster() as c:
        c.seed(namespace=NS)
        for pod in list(c.pods_of(NS, "api")):

            async def annotate(name: str = pod["metadata"]["name"]) -> None:
                assert c.emu is not None
                async with c.emu._lock:
                    meta = {"annotations": {"pytest-resilience/admin-port": "8080"}}
                    await c.emu._patch(PODS, NS, name, {"metadata": meta})

            c.run(annotate())
        node = _first_pod(c)["spec"]["nodeName"]
        c.add(
            PODS,
            OTHER_NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "ledger-0", "namespace": OTHER_NS, "labels": {"app": "x"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running"},
            },
        )
        c.add(
            SERVICES,
            NS,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "api", "namespace": NS},
                "spec": {"selector": {"app": "api"}, "ports": [{"port": 1}]},  # nothing listens
            },
        )
        c.pod_http[("POST", "*", "8080", "/admin/gc")] = (200, "{}")
        c.pod_http[("POST", "*", "8080", "/admin/pool/reset")] = (200, '{"max": 10}')
        c.pod_http[("POST", "*", "8080", "/admin/pool/resize")] = (200, '{"max": 15}')
        c.pod_http[("POST", "*", "8080", "/admin/cache/invalidate")] = (200, "{}")
        c.pod_http[("POST", "*", "8080", "/admin/cache/warm")] = (200, "{}")
        yield c


@pytest.fixture
def target(cluster: EmulatedCluster, tmp_path: Path) -> Iterator[KubernetesTarget]:
    t = KubernetesTarget(kubeconfig=str(cluster.kubeconfig(tmp_path)), namespace=NS)
    try:
        yield t
    finally:
        t.close()


def _first_pod(cluster: EmulatedCluster) -> dict[str, Any]:
    return sorted(cluster.pods_of(NS, "api"), key=lambda p: p["metadata"]["name"])[0]


def _context(target: KubernetesTarget, cluster: EmulatedCluster, **labels: str) -> ActionContext:
    pod = _first_pod(cluster)
    wanted = {
        "namespace": NS,
        "workload": "api",
        "pod": pod["metadata"]["name"],
        "node": pod["spec"]["nodeName"],
        **labels,
    }
    alert = Alert("Test", "api", labels={k: v for k, v in wanted.items() if v})
    return ActionContext(target=target, alert=alert, incident_id="rbac-test")


def _prepare(action: str, target: KubernetesTarget, cluster: EmulatedCluster) -> None:
    if action == "rollback":  # a previous revision to go back to
        target.restart("api")
        target.wait_ready("api", timeout=20)


# -- the table against what the actions really request ------------------------------------------


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_action_requests_exactly_what_the_table_says(
    action: str, target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    _prepare(action, target, cluster)
    start = len(cluster.requests())
    ctx = _context(target, cluster)
    if action in DATASTORE_ACTIONS:  # no database behind the emulated Service: the API part
        with pytest.raises(Exception) as failed:  # is done once the dial fails
            REGISTRY[action](ctx, **PARAMS.get(action, {}))
        assert not isinstance(failed.value, KubeApiError), failed.value
    else:
        REGISTRY[action](ctx, **PARAMS.get(action, {}))
    seen = set(permissions_since(cluster, start))
    if action == "restart_pod":  # the other path: the alert's pod is gone, restart all
        start = len(cluster.requests())
        REGISTRY[action](_context(target, cluster, pod="api-gone-xxxxx"))
        seen |= permissions_since(cluster, start)
    table = normalize(ACTIONS[action])
    assert normalize(seen) == table, (
        f"{action}: requested but not in the table: {sorted(map(str, seen - table))}; "
        f"in the table but never requested: {sorted(map(str, table - seen))}"
    )


def test_the_engine_itself_requests_exactly_what_the_table_says(
    target: KubernetesTarget, cluster: EmulatedCluster
) -> None:
    start = len(cluster.requests())
    # the event watches, finding an alert's target, the ``ready`` verify
    target.subscribe(lambda event: None)
    assert target.wait_watching(10)
    view = Listing(target)
    view.workloads(), view.pods(), view.nodes()
    ctx = _context(target, cluster)
    spec = VerifySpec(wait_s=5, window_s=0.05, interval_s=0.01, condition=Condition("ready"))
    result = verify(spec, ctx, rule=None, resolved=threading.Event())
    assert result.outcome == "fixed", result
    seen = permissions_since(cluster, start)
    assert seen == ENGINE, (
        f"requested but not in ENGINE: {sorted(map(str, seen - ENGINE))}; "
        f"in ENGINE but never requested: {sorted(map(str, ENGINE - seen))}"
    )


def test_every_action_of_the_shipped_playbooks_has_an_entry() -> None:
    missing = shipped_actions() - set(ACTIONS)
    assert not missing, f"actions without Kubernetes permissions in engine/rbac.py: {missing}"
    assert set(ACTIONS) <= set(REGISTRY), set(ACTIONS) - set(REGISTRY)


# -- the manifest against the table ------------------------------------------------------------


def _manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(ENGINE_YAML.read_text()) if d]


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _manifest() if d["kind"] == kind]
    return doc


def _granted(rules: list[dict[str, Any]], *, cluster: bool) -> set[Permission]:
    return {
        Permission(group, resource, verb, cluster)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_roles_grant_what_the_shipped_playbooks_need_and_nothing_more() -> None:
    assert all("resourceNames" not in r for k in ("Role", "ClusterRole") for r in _one(k)["rules"])
    granted = _granted(_one("Role")["rules"], cluster=False) | _granted(
        _one("ClusterRole")["rules"], cluster=True
    )
    wanted = needed(shipped_actions())
    assert granted == wanted, (
        f"missing from {ENGINE_YAML.name}: {sorted(map(str, wanted - granted))}; "
        f"granted but not needed: {sorted(map(str, granted - wanted))}"
    )
    for kind, cluster in (("Role", False), ("ClusterRole", True)):
        assert _granted(rbac_rules(wanted, cluster=cluster), cluster=cluster) == _granted(
            _one(kind)["rules"], cluster=cluster
        )


def test_the_bindings_give_the_roles_to_the_engines_service_account() -> None:
    account = _one("ServiceAccount")["metadata"]
    deployment = _one("Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    for binding, role in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        doc = _one(binding)
        assert doc["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role,
            "name": _one(role)["metadata"]["name"],
        }
        assert doc["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ]


def test_the_deployment_is_one_engine_on_its_store_behind_the_service() -> None:
    deployment = _one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert container["command"] == ["python", "-m", "pytest_resilience.engine", "serve"]
    assert args["target"] == "kubernetes" and args["chaos-allow"] == "context:in-cluster"
    claim = _one("PersistentVolumeClaim")["metadata"]["name"]
    (store,) = [v for v in pod["volumes"] if v.get("persistentVolumeClaim")]
    assert store["persistentVolumeClaim"]["claimName"] == claim
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == store["name"]]
    assert Path(args["store"]).parent == Path(mount["mountPath"])
    port = args["listen"].rsplit(":", 1)[1]
    (webhook,) = container["ports"]
    service = _one("Service")
    assert str(webhook["containerPort"]) == port
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [webhook["name"]]
    # the serve options in the manifest are ones serve takes
    from pytest_resilience.engine.__main__ import build_parser

    build_parser().parse_args(["serve", *container["args"]])
    # the image CI builds and loads (the package is in it)
    workflow = (ROOT / ".github" / "workflows" / "chaos.yml").read_text()
    assert f"-t {container['image']} " in workflow


@pytest.mark.parametrize("doc", _manifest(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_the_manifest_matches_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_alertmanager_receiver_posts_to_the_service_and_is_valid() -> None:
    config = yaml.safe_load(RECEIVER_YAML.read_text())
    service = _one("Service")
    meta, (port,) = service["metadata"], service["spec"]["ports"]
    (receiver,) = [r for r in config["receivers"] if r.get("webhook_configs")]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}/alerts"
    assert webhook["send_resolved"] is True and webhook["max_alerts"] > 0
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == receiver["name"]]
    (matcher,) = route["matchers"]
    names = matcher.removeprefix('alertname=~"').removesuffix('"').split("|")
    playbook_names = {a for book in load_playbooks(BUNDLED_PLAYBOOKS) for a in book.alerts}
    assert sorted(names) == sorted(playbook_names)
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not on PATH (Debian package prometheus-alertmanager)")
    check = subprocess.run(
        [amtool, "check-config", str(RECEIVER_YAML)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
