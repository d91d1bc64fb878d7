"""``serve --target kubernetes``: the engine as a cluster's service.

The real kube-prometheus ``KubePodCrashLooping`` delivery (tests/payloads/) goes over HTTP to a
``serve`` process pointed at the API emulator through a kubeconfig; the crash-loop playbook's
restart_pod acts on the emulated cluster, and every request the engine made is one that
deploy/engine/engine.yaml's RBAC grants. In a pod the engine takes its service account (the
in-cluster config) and the plugin's blast-radius policy decides whether it may act; bad options
are refused naming the option.
"""

# ruff: noqa: F401, F811 - the serve fixture imported from test_engine_restart
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_controllers import PODS, EmulatedCluster
from test_engine_rbac import ENGINE_YAML, _granted, permissions_of
from test_engine_restart import serve

from pytest_resilience.engine.__main__ import main
from pytest_resilience.errors import NotAllowed, TargetError
from pytest_resilience.targets.kubernetes.api import IN_CLUSTER, connect_in_cluster
from pytest_resilience.targets.kubernetes.safety import ChaosPolicy

NS = "shop"
PAYLOAD = (
    Path(__file__).parents[1] / "payloads" / "alertmanager-0.25-kube-pod-crashlooping-firing.body"
)
SAMPLE_POD = "api-7d9f8b6c5d-xk2mn"  # the pod the real delivery names


#: set in a pod: the engine would take the in-cluster config instead of the kubeconfig
_POD_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def _no_pod_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _POD_ENV}


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as c:
        c.seed(namespace=NS)
        yield c


@pytest.fixture
def kubeconfig(cluster: EmulatedCluster, tmp_path: Path) -> Path:
    return cluster.kubeconfig(tmp_path, namespace=NS)


def _delivery(pod: str, uid: str) -> bytes:
    """The real body, for the emulated cluster's pod (its name is random, as a real one)."""
    body = "".join(line for line in PAYLOAD.read_text().splitlines() if not line.startswith("#"))
    assert SAMPLE_POD in body
    return (
        body.replace(SAMPLE_POD, pod).replace("3f1c2b9e-5a2d-4d7e-9a57-0c1f8e6b2a41", uid).encode()
    )


def _pod(cluster: EmulatedCluster, name: str) -> dict | None:
    return cluster.obj(PODS, NS, name)


def _crash_looping(cluster: EmulatedCluster, name: str) -> None:
    """The container as the kubelet shows it between crashes: waiting in CrashLoopBackOff,
    so nothing can be exec'd into it (kubelet GetExec: container not found)."""
    pod = _pod(cluster, name)
    assert cluster.emu is not None and pod is not None
    statuses = pod["status"]["containerStatuses"]
    for status in statuses:
        status.update(
            ready=False,
            restartCount=5,
            state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
            lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
        )
    cluster.run(cluster.emu._patch(PODS, NS, name, {"status": {"containerStatuses": statuses}}))


def test_a_real_crashlooping_delivery_replaces_the_pod_on_the_cluster(
    cluster: EmulatedCluster, kubeconfig: Path, serve, tmp_path: Path
) -> None:
    victim = sorted(cluster.pods_of(NS, "api"), key=lambda p: p["metadata"]["name"])[0]
    name, uid = victim["metadata"]["name"], victim["metadata"]["uid"]
    _crash_looping(cluster, name)
    others = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")} - {name}
    start = len(cluster.requests())
    _, url = serve(
        dict.fromkeys(_POD_ENV),
        [
            "--target=kubernetes",
            f"--kubeconfig={kubeconfig}",
            f"--namespace={NS}",
            f"--store={tmp_path / 'engine.sqlite'}",
            "--listen=127.0.0.1:0",
        ],
    )
    request = urllib.request.Request(
        url + "/alerts",
        data=_delivery(name, uid),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200

    # restart_pod on Kubernetes: the alert's pod is deleted with its grace period (a
    # container in back-off cannot be exec'd into, and a restart in the same pod keeps
    # its back-off); the ReplicaSet starts a fresh pod in its place
    def replaced() -> set[str]:
        now = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
        return now - others - {name} if name not in now else set()

    assert len(cluster.eventually(replaced, timeout=30)) == 1  # one fresh pod
    assert cluster.exec_log == []
    deletes = [r for r in cluster.requests()[start:] if r.method == "DELETE"]
    assert [(d.path.rsplit("/", 1)[-1], d.query.get("gracePeriodSeconds")) for d in deletes] == [
        (name, None)
    ]
    # the action is on the record, where `incidents` and `postmortem` read it
    cluster.eventually(lambda: _action_recorded(tmp_path / "engine.sqlite", name), timeout=30)

    # every request the engine made is one the manifest's RBAC grants
    granted = {(p.group, p.resource, p.verb) for p in _manifest_grants()}
    made = set()
    for r in cluster.requests()[start:]:
        made |= {(p.group, p.resource, p.verb, p.cluster) for p in permissions_of(r, NS)}
    cluster_wide = {(p.group, p.resource, p.verb) for p in _manifest_grants() if p.cluster}
    denied = [m for m in made if m[:3] not in granted or (m[3] and m[:3] not in cluster_wide)]
    assert not denied, f"requests engine.yaml's RBAC would refuse: {sorted(denied)}"


def _manifest_grants() -> set:
    import yaml

    docs = [d for d in yaml.safe_load_all(ENGINE_YAML.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (wide,) = [d for d in docs if d["kind"] == "ClusterRole"]
    return _granted(role["rules"], cluster=False) | _granted(wide["rules"], cluster=True)


def _engine_cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_resilience.engine", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=_no_pod_env(),
    )
    return out.stdout if out.returncode == 0 else ""


def _action_recorded(store: Path, pod: str) -> bool:
    """The store says restart_pod killed that pod, for the crash-loop incident on api."""
    listed = json.loads(_engine_cli("incidents", f"--store={store}", "--format=json") or "[]")
    ids = [
        i["id"]
        for i in listed
        if i["alert"] == "KubePodCrashLooping"
        and i["target"] == "api"
        and i["playbook"] == "Pod Crash Loop"
    ]
    return bool(ids) and f"replaced pod {pod}" in _engine_cli(
        "postmortem", f"--store={store}", ids[0], "--format=json"
    )


# -- in a pod ---------------------------------------------------------------------------------


def _service_account(tmp_path: Path) -> tuple[str, str]:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    return str(token), str(ca)


def test_in_a_pod_the_service_account_is_the_context_in_cluster(tmp_path: Path) -> None:
    token, ca = _service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    conn = connect_in_cluster(token_file=token, ca_file=ca, environ=env)
    assert (str(conn.context), conn.host) == (IN_CLUSTER, "https://10.96.0.1:443")
    assert conn.configuration.ssl_ca_cert == ca
    assert conn.configuration.get_api_key_with_prefix("BearerToken") == "bearer sa-token"
    # the plugin's policy: a cluster reached from a pod is not a kind cluster by name
    with pytest.raises(NotAllowed, match="--chaos-allow context:in-cluster"):
        ChaosPolicy.parse([]).check_context(conn.context)
    ChaosPolicy.parse(["context:in-cluster"]).check_context(conn.context)


def test_outside_a_pod_the_in_cluster_config_says_what_is_missing(tmp_path: Path) -> None:
    token, ca = _service_account(tmp_path)
    with pytest.raises(TargetError, match=r"KUBERNETES_SERVICE_HOST.*outside a pod use a kube"):
        connect_in_cluster(token_file=token, ca_file=ca, environ={})


# -- options refused, naming the option ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--target=local", "--kubeconfig=k"], "--kubeconfig is for --target kubernetes"),
        (["--namespace=shop"], "--namespace is for --target kubernetes"),
        (["--target=none", "--chaos-allow=context:x"], "--chaos-allow is for --target kube"),
        (["--target=kubernetes", "--services=s.yaml"], "--services is for --target local"),
        (["--target=kubernetes", "--target-factory=m:f"], "field '--target-factory'"),
        (["--target=kubernetes", "--kubeconfig=/nonexistent/kubeconfig"], "'--kubeconfig'"),
        (["--target=kubernetes", "KUBECONFIG", "--context=prod"], "field '--context'.*kind-test"),
        (["--target=kubernetes", "KUBECONFIG", "--namespace=Shop_1"], "field '--namespace'"),
        (["--target=kubernetes", "KUBECONFIG", "--chaos-allow=cluster:x"], "'--chaos-allow'"),
        (
            ["--target=kubernetes", "KUBECONFIG", "--namespace=kube-system"],
            "pass --chaos-allow namespace:kube-system",
        ),
    ],
)
def test_bad_kubernetes_options_are_refused_naming_the_option(
    args: list[str], named: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # a kubeconfig of a kind-like cluster that is not there: every refusal comes first
    kubeconfig = EmulatedCluster().kubeconfig(tmp_path, server="http://127.0.0.1:9")
    args = [f"--kubeconfig={kubeconfig}" if a == "KUBECONFIG" else a for a in args]
    store = tmp_path / "engine.sqlite"
    assert main(["serve", f"--store={store}", "--listen=127.0.0.1:0", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(named, err), err
    assert not store.exists()  # refused before the engine started


def test_in_a_pod_without_its_service_account_serve_says_so(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    code = main(["serve", f"--store={tmp_path / 'e.sqlite'}", "--target=kubernetes"])
    err = capsys.readouterr().err
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("this test runs in a pod: the service account is there")
    assert code == 2 and "no in-cluster config" in err and "--kubeconfig" in err, err
