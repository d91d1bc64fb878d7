"""The scenarios of ``scenarios/``, unchanged, on the Kubernetes path.

Each test runs a real pytest session with ``--chaos-target kubernetes`` against the kmock
emulator whose kubelet stand-in (:mod:`kube_kubelet`) runs deploy/k8s/'s pods as real
processes: the demo API, Postgres, Redis and Toxiproxy, behind a kube-proxy stand-in. The
load goes through the api Service's NodePort, the faults go through the API server
(delete, exec, patch), and the scenario files' own assertions decide, as on the local
target. The kubeconfig's context is ``kind-chaos`` on a loopback server, which the
safety guard allows as it allows kind.

Besides the scenario's verdict, each test checks what only the cluster side can see:
that the killed pod's process is really gone, its replacement really runs, and the load
really went through the Service.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kube_controllers import PODS
from kube_kubelet import KubeletCluster, demo_manifests

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
NAMESPACE = "chaos-demo"
RUN_TIMEOUT_S = 600


@dataclass
class Outcome:
    returncode: int
    output: str
    #: nodeid -> "passed" | "failed" | "skipped: reason" | "error"
    results: dict[str, str]


@pytest.fixture(scope="module")
def kind() -> Iterator[KubeletCluster]:
    """deploy/k8s/ applied to the emulator, every Deployment Ready with real processes.

    Its directory is not under pytest's basetemp: a concurrent pytest session prunes old
    basetemps at its start, which would delete the Postgres data of a running pod."""
    work = Path(tempfile.mkdtemp(prefix="kube-kubelet-"))
    try:
        with KubeletCluster(work) as cluster:
            cluster.add_nodes()
            cluster.apply(demo_manifests())
            cluster.wait_all_ready()
            yield cluster
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def run_dir(kind: KubeletCluster) -> Iterator[Path]:
    """A scenario run's kubeconfig, ledger and outcomes (outside basetemp, as above)."""
    path = Path(tempfile.mkdtemp(prefix="run-", dir=kind.work_dir))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_on_kubernetes(cluster: KubeletCluster, run_dir: Path, *args: str) -> Outcome:
    """``pytest --chaos-target kubernetes ARGS`` in the repository, against ``cluster``."""
    kubeconfig = cluster.kubeconfig(run_dir, context="kind-chaos", namespace=NAMESPACE)
    outcomes = run_dir / "outcomes.json"
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"),
        *("--chaos-target", "kubernetes", "--chaos-namespace", NAMESPACE),
        *("--chaos-ledger", str(run_dir / "ledger.sqlite")),
        *("--toxiproxy-url", cluster.endpoint("toxiproxy-api")),
        *("-p", "kube_outcomes"),
        *args,
    ]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KUBE_OUTCOMES": str(outcomes),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("CI", None)  # a scenario the target cannot run is skipped, not failed
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    results = json.loads(outcomes.read_text()) if outcomes.exists() else {}
    output = done.stdout + done.stderr
    if done.returncode not in (0, 5):
        output += "\n--- cluster ---\n" + cluster.describe()
    return Outcome(done.returncode, output, results)


def _matches(got: str, expected: str) -> bool:
    """``passed``/``skipped: <start>`` exactly; ``failed: <cause>`` has the cause in it."""
    if expected.startswith("failed: "):
        return got.startswith("failed") and expected.removeprefix("failed: ") in got
    return got.startswith(expected)


def _api_pods(cluster: KubeletCluster) -> dict[str, int | None]:
    """The api pods the kubelet runs: name -> the container's pid."""
    emu = cluster.emu
    assert emu is not None
    return {
        ctx.name: next(iter(ctx.containers.values())).proc.pid  # type: ignore[union-attr]
        for ctx in list(emu.runtime.values())  # type: ignore[attr-defined]
        if ctx.name.startswith("api-") and not ctx.stopping
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


#: what each scenario of scenarios/ does on the Kubernetes path today: "passed",
#: "skipped: <reason start>", "failed: <the known cause>" (a defect not fixed yet; a fix
#: makes this test say so, and the entry changes)
EXPECTED: dict[str, str] = {
    "scenarios/bad_release_rollback.yaml::bad_release_rollback": "passed",
    "scenarios/high_load_autoscaling.yaml::high_load_autoscaling": "passed",
    "scenarios/pod_kill_api.yaml::pod_kill_api": "passed",
    "scenarios/test_database_failure.py::"
    "test_postgres_lost_breaker_opens_service_stays_available": "passed",
    "scenarios/test_disk_space.py::test_disk_at_90_percent_corrupts_nothing_and_fires_an_alert": (
        "passed"
    ),
    "scenarios/test_high_load.py::"
    "test_api_scales_out_under_high_load_and_latency_stays_acceptable": "passed",
    "scenarios/test_network_latency.py::"
    "test_300ms_on_postgres_and_redis_keeps_errors_and_p99_within_slo": "passed",
    "scenarios/test_pod_kill.py::test_api_survives_losing_a_replica": "passed",
    "scenarios/test_prometheus_loop.py::test_leaked_pool_detected_healed_and_resolved"
    "[alertmanager]": "skipped: the real loop needs prometheus and prometheus-alertmanager",
    "scenarios/test_prometheus_loop.py::test_leaked_pool_detected_healed_and_resolved"
    "[built-in]": "passed",
    "scenarios/test_remediation.py::test_bad_release_is_rolled_back": "passed",
    "scenarios/test_remediation.py::test_crash_loop_gets_a_fresh_restart": "passed",
    "scenarios/test_remediation.py::test_crowded_out_cache_is_invalidated_and_warmed": "passed",
    "scenarios/test_remediation.py::test_leaked_pool_is_reset_and_grown": "passed",
    "scenarios/test_remediation.py::test_memory_hog_gc_then_scale_up_and_drain": "passed",
    # needs a node left NotReady with its pods; on Kubernetes node_failure is a drain
    "scenarios/test_remediation.py::test_failed_node_is_drained_and_replaced": (
        "skipped: target 'kubernetes' lacks the capability 'node_outage'"
    ),
    "scenarios/test_remediation.py::test_leak_that_keeps_leaking_pages_once": "passed",
}


@pytest.mark.soak
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)  # the whole scenarios/ set: ~7 min
def test_every_scenario_runs_on_kubernetes_or_is_skipped_naming_the_capability(
    kind: KubeletCluster, run_dir: Path
) -> None:
    """``pytest -m chaos scenarios/ --chaos-target kubernetes``: every scenario runs, with
    its own assertions, and ends as :data:`EXPECTED` says (a capability the target lacked
    would be a collection skip naming it). The two pod kills are checked from the
    cluster's side too."""
    connections = kind.proxy.connections
    outcome = run_on_kubernetes(kind, run_dir, "-m", "chaos", "scenarios/")
    assert set(outcome.results) == set(EXPECTED), outcome.output
    wrong = {
        nodeid: got
        for nodeid, got in outcome.results.items()
        if not _matches(got, EXPECTED[nodeid])
    }
    assert not wrong, f"{wrong}\n{outcome.output}"
    assert outcome.returncode in (0, 1), outcome.output  # 1: the known failures
    assert kind.proxy.connections > connections, "the load did not go through the Service"


@pytest.mark.soak
def test_pod_kill_scenarios_kill_and_replace_real_processes(
    kind: KubeletCluster, run_dir: Path
) -> None:
    """scenarios/test_pod_kill.py and pod_kill_api.yaml, seen from the cluster's side: each
    kill took one api pod's process down for good, the ReplicaSet replaced it with a new
    process, and the load went through the Service."""
    kind.wait_all_ready()
    before = _api_pods(kind)
    started_before = len(kind.started)
    connections = kind.proxy.connections
    scenarios = [
        "scenarios/test_pod_kill.py::test_api_survives_losing_a_replica",
        "scenarios/pod_kill_api.yaml::pod_kill_api",
    ]
    outcome = run_on_kubernetes(kind, run_dir, *scenarios)
    assert outcome.results == dict.fromkeys(scenarios, "passed"), outcome.output
    kind.wait_all_ready()
    after = _api_pods(kind)
    new = [name for name in kind.started[started_before:] if name.startswith("api-")]
    assert len(new) == 2, new  # two pod_kill scenarios (count 1), each replaced once
    killed = (set(before) | set(new)) - set(after)  # the second may kill the first's new pod
    assert len(killed) == 2 and len(after) == 3, (before, new, after)
    assert not any(_alive(kind.first_pids[name]) for name in killed), "a killed pod lives"
    assert all(_alive(pid) for pid in after.values() if pid is not None)
    assert kind.proxy.connections > connections, "the load did not go through the Service"


# ------------------------------------------------ the kubelet stand-in's own behaviour

NETWORK_OK = os.geteuid() == 0 and shutil.which("iptables") is not None


@pytest.fixture
def target(kind: KubeletCluster, run_dir: Path) -> Iterator[Any]:
    from pytest_resilience.targets.kubernetes import KubernetesTarget

    kubeconfig = kind.kubeconfig(run_dir, context="kind-chaos", namespace=NAMESPACE)
    t = KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NAMESPACE)
    yield t
    t.close()


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not NETWORK_OK, reason="needs root and iptables")
def test_network_block_through_the_api_server_cuts_the_pod_off_for_real(
    kind: KubeletCluster, target: Any
) -> None:
    """The fault's ephemeral container runs iptables in the pod's netns; here those rules
    land on this machine scoped to the pod IP, so the pod is really unreachable."""
    from pytest_resilience.targets.base import ChangeLog

    pg = target.select("app=postgres")[0]
    assert _connects(pg.host, 5432)
    changes = ChangeLog("kubelet-test-block")
    target.network_block(
        "app=postgres",
        port=None,
        direction="ingress",
        action="reject",
        name="kubelet-test",
        changes=changes,
    )
    try:
        assert changes.records, "the fault recorded nothing"
        assert not _connects(pg.host, 5432), "postgres still answers under the block"
        redis = target.select("app=redis")[0]
        assert _connects(redis.host, 6379), "the block reached another pod"
    finally:
        for record in changes.records:
            target.undo(record)
    assert _connects(pg.host, 5432), "postgres unreachable after the undo"
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert pg.host not in rules, rules


def test_disk_fill_lands_in_the_pods_volume_and_du_counts_it(
    kind: KubeletCluster, target: Any
) -> None:
    """disk_fill's fallocate by exec lands in the postgres pod's emptyDir directory, and
    ``volume_usage`` (``du`` against its sizeLimit, as the kubelet counts it) sees it;
    the undo removes the file."""
    from pytest_resilience.targets.base import ChangeLog

    pg = target.select("app=postgres")[0]
    (ctx,) = [c for c in kind.emu.runtime.values() if c.name == pg.name]  # type: ignore[union-attr]
    volume = ctx.host_path("/var/lib/postgresql/data")
    before = target.volume_usage("postgres")
    assert before is not None and before < 0.5
    changes = ChangeLog("kubelet-test#1")
    target.disk_fill("postgres", percent=90, path=None, changes=changes)
    try:
        (record,) = changes.records
        fill = Path(volume) / Path(record.detail["file"]).name
        assert fill.stat().st_size >= 0.8 * 512 * 2**20
        assert target.volume_usage("postgres") >= 0.9
    finally:
        for record in changes.records:
            target.undo(record)
    assert not fill.exists()
    assert target.volume_usage("postgres") < 0.5


def test_cache_crowd_out_reaches_redis_by_redis_cli_in_its_pod(
    kind: KubeletCluster, target: Any
) -> None:
    """The Redis Service's cluster address is not reachable from a CI runner: the crowd-out
    fault sends its commands by ``redis-cli`` exec'd in the redis pod, and its revert
    puts Redis back as it found it."""
    import redis

    sys.path.insert(0, str(REPO / "scenarios"))
    from remediation_faults import STALE_PREFIX, CacheCrowdOut

    from pytest_resilience.faults.base import FaultContext

    pod = target.select("app=redis")[0]
    direct = redis.Redis(host=pod.host, port=6379, socket_timeout=5)
    direct.set("item:1", b"hot", ex=3600)
    fault, ctx = CacheCrowdOut("redis"), FaultContext(target=target)
    spec = fault.inject(ctx)
    try:
        assert spec["via"] == f"redis-cli in {pod.name}"
        assert not direct.exists("item:1")  # evicted: it had a TTL
        with pytest.raises(redis.OutOfMemoryError):
            direct.set("item:2", b"hot", ex=3600)
    finally:
        fault.revert(ctx)
    assert direct.config_get("maxmemory")["maxmemory"] == "0"
    assert not list(direct.scan_iter(match=f"{STALE_PREFIX}*"))
    assert direct.set("item:2", b"hot", ex=3600)


def test_sigterm_by_exec_reaches_pid_1_and_the_kubelet_restarts_the_container(
    kind: KubeletCluster, target: Any
) -> None:
    """``kill -TERM 1`` by exec: the demo handles SIGTERM and exits; the kubelet restarts
    the container in the same pod (restartCount 1, Ready again once /readyz answers)."""
    pod = target.select("app=api")[0]
    pid = _api_pods(kind)[pod.name]
    assert pid is not None
    target.kill_pod(pod, sig=signal.SIGTERM)

    def restarted() -> dict[str, Any] | None:
        obj = kind.obj(PODS, NAMESPACE, pod.name) or {}
        status = (obj.get("status", {}).get("containerStatuses") or [{}])[0]
        return status if status.get("restartCount") == 1 and status.get("ready") else None

    status = kind.eventually(restarted, timeout=60)
    assert status["lastState"]["terminated"]["exitCode"] == 0  # aiohttp's graceful exit
    assert not _alive(pid)
    new_pid = _api_pods(kind)[pod.name]
    assert new_pid not in (None, pid) and _alive(new_pid)  # type: ignore[arg-type]


def test_pod_and_service_proxy_reach_the_pods(kind: KubeletCluster, target: Any) -> None:
    """What the probes and admin hooks use from outside a cluster: the proxy subresource."""
    import kubernetes.client as kc

    pod = target.select("app=api")[0]
    core = kc.CoreV1Api(target.conn.api_client())
    metrics = core.connect_get_namespaced_pod_proxy_with_path(
        f"{pod.name}:8080", NAMESPACE, "metrics"
    )
    assert "demo_circuit_breaker_open" in metrics
    ready = core.connect_get_namespaced_service_proxy_with_path("api:http", NAMESPACE, "readyz")
    assert '"status": "ready"' in ready or "'status': 'ready'" in ready, ready


def test_node_failure_drains_through_the_pdb_and_the_pods_run_on_the_other_worker(
    kind: KubeletCluster, target: Any
) -> None:
    """Drain a worker: the Eviction API honours the api PodDisruptionBudget (minAvailable
    2) while replacements become Ready for real on the other worker; every evicted pod's
    process is gone, and the service answered throughout the node's loss."""
    from pytest_resilience.targets.base import ChangeLog

    nodes = {p.node for p in target.select("app=api")}
    busy = max(nodes, key=lambda n: sum(p.node == n for p in target.select("app=api")))
    before = _api_pods(kind)
    doomed = {p.name for p in target.pods() if p.node == busy}
    changes = ChangeLog("kubelet-test-node")
    try:
        target.node_failure(busy, changes=changes)
        target.wait_ready("api", timeout=120, replicas=3)
        for workload in ("postgres", "redis", "toxiproxy"):
            target.wait_ready(workload, timeout=120)
        # Terminating pods stay on the node until their processes end: Postgres' SIGTERM
        # is a smart shutdown that waits for the API's pooled sessions, so up to its grace
        # (30 s) before the kubelet's SIGKILL
        kind.eventually(
            lambda: all(p["spec"].get("nodeName") != busy for p in kind.items(PODS, NAMESPACE)),
            timeout=60,
        )
        gone = set(before) & doomed
        assert gone, "the drained worker ran no api pod"
        assert not any(_alive(before[name]) for name in gone)
        with urllib.request.urlopen(kind.endpoint("api") + "/readyz", timeout=10) as answer:
            assert answer.status == 200
    finally:
        for record in changes.records:
            target.undo(record)
    assert all(n.schedulable for n in target.nodes())


def _versions(target: Any) -> dict[str, str]:
    """Each Ready api pod's release as it reports it itself (/readyz, pod proxy)."""
    import kubernetes.client as kc
    from kubernetes.client.exceptions import ApiException

    core = kc.CoreV1Api(target.conn.api_client())
    out = {}
    for pod in (p for p in target.select("app=api") if p.ready):
        try:
            text = core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod.name}:8080", NAMESPACE, "readyz"
            )
        except ApiException:  # it went Terminating between the list and the GET
            continue
        out[pod.name] = json.loads(text.replace("'", '"'))["version"] if text else "?"
    return out


def test_a_release_rolls_out_for_real_and_rollback_restores_the_previous_one(
    kind: KubeletCluster, target: Any
) -> None:
    """A pod-template change (env DEMO_VERSION=v2, as ``kubectl set env``) rolls out with
    surge through real readiness; v2 pods really answer 500 to one item request in twenty
    through the Service; ``rollback`` (``kubectl rollout undo``) brings v1 pods back."""
    import kubernetes.client as kc

    apps = kc.AppsV1Api(target.conn.api_client())
    dep = apps.read_namespaced_deployment("api", NAMESPACE).to_dict()
    assert list(_versions(target).values()) == ["v1"] * 3
    container = dep["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container["env"] if e["name"] == "DEMO_VERSION"]
    index = container["env"].index(env[0])
    apps.patch_namespaced_deployment(
        "api",
        NAMESPACE,
        [
            {
                "op": "replace",
                "path": f"/spec/template/spec/containers/0/env/{index}/value",
                "value": "v2",
            }
        ],
    )
    try:
        target.wait_ready("api", timeout=120, replicas=3)
        kind.eventually(lambda: list(_versions(target).values()) == ["v2"] * 3, timeout=60)
        codes = []
        for item in range(1, 61):  # twenty per pod at most: each pod fails its tenth
            try:
                with urllib.request.urlopen(f"{kind.endpoint('api')}/items/{item}", timeout=10):
                    codes.append(200)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
        assert 500 in codes, codes
    finally:
        revision = target.rollback("api")
        target.wait_ready("api", timeout=120, replicas=3)
    assert revision == "v1"  # the release rolled back to (the template's DEMO_VERSION)
    kind.eventually(lambda: list(_versions(target).values()) == ["v1"] * 3, timeout=60)
