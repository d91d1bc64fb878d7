"""Load workers in the cluster: ``workers=N`` on a target with the ``load_workers`` capability.

The Kubernetes target's :class:`~pytest_resilience.targets.kubernetes.load_workers.KubeLoadWorkers`
against the kmock emulator with its kubelet stand-in (kube_kubelet.py), whose pods are
real processes: the workers' Deployment must be created with N replicas and the run's
arguments, its pods must connect to the master in this process and make the load, and it
must be deleted when the run ends, also when the run or the test fails. Workers that never
come end the start with an error that names the Deployment and what its pods say.
"""

from __future__ import annotations

import http.server
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_controllers import DEPLOYMENTS, PODS
from kube_kubelet import IMAGES, Image, KubeletCluster, PodContext, ProcessKubelet

from pytest_resilience.capabilities import missing, offered
from pytest_resilience.load import LoadError, start_load_on
from pytest_resilience.load_starter import LoadStarter
from pytest_resilience.targets.base import LoadWorkers
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.load_workers import (
    DEPLOYMENT,
    IMAGE_ENV,
    worker_deployment,
)
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.timeline import LOAD_STARTED, LOAD_STOPPED, Timeline

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "k8s" / "load" / "locust-workers.yaml"
NS = "chaos-demo"
USERS = 4  # also the most requests in flight when the workers stop


def test_the_manifest_is_valid_kubernetes_and_is_the_object_the_target_creates() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    (doc,) = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    kubernetes_validate.validate(doc, "1.31.0", strict=True)
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    built = worker_deployment(
        NS, container["args"], replicas=doc["spec"]["replicas"], image=container["image"]
    )
    assert built == doc
    kubernetes_validate.validate(built, "1.31.0", strict=True)
    assert MANIFEST.parent != ROOT / "deploy" / "k8s"  # not applied with the demo
    assert container["image"] == "pytest-resilience-demo:ci"  # the image the workflow loads


@pytest.mark.parametrize("workflow", ["chaos.yml", "weekly-resilience.yml"])
def test_the_kind_workflows_have_the_api_server_check_the_manifest(workflow: str) -> None:
    runs = [
        " ".join(step.get("run", "").split())
        for job in yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())[
            "jobs"
        ].values()
        for step in job["steps"]
    ]
    check = "kubectl apply --dry-run=server -f deploy/k8s/load/locust-workers.yaml"
    at = next(i for i, run in enumerate(runs) if check in run)
    assert at < next(i for i, run in enumerate(runs) if "pytest -m chaos scenarios/ -rs" in run)


def test_the_capability_is_the_kubernetes_mixin_and_the_local_target_lacks_it() -> None:
    assert issubclass(KubernetesTarget, LoadWorkers) and "load_workers" in offered(KubernetesTarget)
    assert "load_workers" in missing(LocalTarget)


SCENARIO = """
import pytest

@pytest.mark.chaos(requires=["load_workers"])
def test_cluster_load(load):
    load(workers=4)
"""


def test_a_scenario_asking_for_cluster_workers_is_skipped_on_the_local_target(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_cluster=SCENARIO)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", "--chaos-target=local")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*target 'local' lacks the capability 'load_workers'*"])


def _demo_image_with_command(original: Image) -> Image:
    """The demo image's stand-in, honouring a container's ``command`` (which replaces the
    image's ENTRYPOINT, as the container runtime does); ``python`` is this interpreter."""

    def start(ctx: PodContext, c: dict[str, Any], env: dict[str, str]) -> list[str]:
        command = list(c.get("command") or [])
        if not command:
            return original.start(ctx, c, env)
        if command[0] in ("python", "python3"):
            command[0] = sys.executable
        return [*command, *ctx.rewrite_all(c.get("args", []))]

    return Image(original.env, original.workdir, start)


class _CreatingKubelet(ProcessKubelet):
    """STAND-IN for kube-controller-manager's Deployment controller on a *create*: the
    emulator reconciles a Deployment after a PATCH only (its own are seeded), a real
    controller also after the POST that creates it."""

    async def _handle(self, request: Any) -> Any:
        response = await super()._handle(request)
        plural = request.resource.plural if request.resource else None
        method = str(request.method.value).upper()
        if plural == "deployments" and method == "POST" and response.status < 400:
            self.cluster.spawn(self._reconcile(request.namespace, request.data["metadata"]["name"]))
        return response


class _LoadCluster(KubeletCluster):
    emulator_class = _CreatingKubelet


@pytest.fixture
def kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeletCluster]:
    """The emulator with its kubelet stand-in and kind's two worker nodes; no demo."""
    image = "pytest-resilience-demo"
    monkeypatch.setitem(IMAGES, image, _demo_image_with_command(IMAGES[image]))
    work = Path(tempfile.mkdtemp(prefix="kube-load-"))
    try:
        with _LoadCluster(work) as cluster:
            cluster.add_nodes()
            yield cluster
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def target(kind: KubeletCluster, tmp_path: Path) -> Iterator[KubernetesTarget]:
    kubeconfig = kind.kubeconfig(tmp_path, context="kind-chaos", namespace=NS)
    t = KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NS)
    yield t
    t.close()


class _DemoPaths(http.server.BaseHTTPRequestHandler):
    """200 for the demo locustfile's reads and writes (``/items/N``, ``POST /items``),
    each request counted: what the workers sent is what arrived. A worker stopped
    while its request is in flight hangs up before the answer (a broken pipe here);
    that request arrived but was never recorded, so the count may run ahead of the
    workers' totals by at most one request per user."""

    count = 0
    lock = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.lock:
            type(self).count += 1
        self.send_response(200 if self.path.startswith("/items") else 404)
        self.send_header("Content-Length", "2")
        try:
            self.end_headers()
            self.wfile.write(b"{}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker was stopped mid-request; see the class docstring

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def demo_paths() -> Iterator[tuple[str, type[_DemoPaths]]]:
    handler = type("Counted", (_DemoPaths,), {"count": 0, "lock": threading.Lock()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()
    thread.join()


def _deployment(kind: KubeletCluster) -> dict[str, Any] | None:
    return kind.obj(DEPLOYMENTS, NS, DEPLOYMENT)


def _worker_pods(kind: KubeletCluster) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in kind.items(PODS, NS)
        if p["metadata"].get("labels", {}).get("app") == DEPLOYMENT
    ]


def _worker_pods_gone(
    kind: KubeletCluster, target: KubernetesTarget, timeout: float = 30.0
) -> bool:
    """The emulator runs no garbage collector: the pods of a deleted Deployment stay, so
    the test ends them itself (a real cluster's GC does: propagationPolicy Background)."""
    for pod in target.pods(f"app={DEPLOYMENT}"):
        target.kill_pod(pod)
    deadline = time.monotonic() + timeout
    while _worker_pods(kind):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # polling the emulator's store, not synchronising with the code
    return True


def test_workers_run_as_the_deployment_make_the_load_and_go_with_the_run(
    kind: KubeletCluster, target: KubernetesTarget, demo_paths: tuple[str, type[_DemoPaths]]
) -> None:
    url, served = demo_paths
    timeline = Timeline("t")
    run = start_load_on(
        target, "api", host=url, users=USERS, workers=2, timeline=timeline, start_timeout=60
    )
    with run:
        deployment = _deployment(kind)
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 2
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "pytest_resilience._locust_driver"]
        args = container["args"]
        flags = dict(zip(args[::2], args[1::2], strict=True))
        assert flags["--role"] == "worker" and flags["--host"] == url
        assert flags["--master-host"] == "127.0.0.1"  # the route to the nodes' InternalIP
        assert int(flags["--master-port"]) > 0
        assert "--parent-pid" not in flags and "--locustfile" not in flags
        assert run.worker_pids == []  # none of them is this machine's child
        run.wait_for_samples(3, timeout=30)
    (started,) = timeline.events(LOAD_STARTED)
    assert started.detail["workers_in"] == f"deployment {NS}/{DEPLOYMENT}"
    (stopped,) = timeline.events(LOAD_STOPPED)
    assert stopped.detail["reason"] == "stopped"
    per_worker = stopped.detail["worker_requests"]
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    assert sum(per_worker.values()) == run.totals.requests
    # in flight at the stop: arrived, never answered to a worker (at most one per user)
    assert run.totals.requests <= served.count <= run.totals.requests + USERS
    assert run.totals.failures == 0
    assert _deployment(kind) is None  # deleted with the run
    assert _worker_pods_gone(kind, target)


def test_the_load_fixture_runs_its_workers_on_the_cluster_and_one_process_here(
    kind: KubeletCluster, target: KubernetesTarget, demo_paths: tuple[str, type[_DemoPaths]]
) -> None:
    """What ``load`` returns, built as the plugin builds it for ``--load-workers=2``: the
    scenario says nothing of where, the target's capability decides."""
    url, _ = demo_paths
    timeline = Timeline("t")
    load = LoadStarter(target=target, entry="api", timeline=timeline, default_workers=2)
    with load(host=url, users=2, start_timeout=60) as run:
        assert _deployment(kind) is not None  # --load-workers=2: on the cluster
        run.wait_for_samples(2, timeout=30)
    with load(host=url, users=2, workers=1) as run:
        assert _deployment(kind) is None  # one process: here
        run.wait_for_samples(2, timeout=30)
    on_cluster, here = timeline.events(LOAD_STARTED)
    assert on_cluster.detail["workers_in"] == f"deployment {NS}/{DEPLOYMENT}"
    assert "workers_in" not in here.detail
    assert _worker_pods_gone(kind, target)


def test_a_failing_test_still_deletes_the_workers(
    kind: KubeletCluster, target: KubernetesTarget, demo_paths: tuple[str, type[_DemoPaths]]
) -> None:
    with (
        pytest.raises(ZeroDivisionError),
        start_load_on(target, "api", host=demo_paths[0], users=2, workers=2),
    ):
        assert _deployment(kind) is not None
        1 / 0  # noqa: B018 - the test body failing mid-load
    assert _deployment(kind) is None
    assert _worker_pods_gone(kind, target)


def test_workers_that_never_come_fail_the_start_naming_the_deployment_and_why(
    kind: KubeletCluster,
    target: KubernetesTarget,
    demo_paths: tuple[str, type[_DemoPaths]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(IMAGE_ENV, "registry.invalid/no-such-image:1")  # never pulled
    began = time.monotonic()
    with pytest.raises(LoadError) as failed:
        start_load_on(target, "api", host=demo_paths[0], users=2, workers=3, start_timeout=5)
    assert time.monotonic() - began < 30  # the deadline, not a hang
    message = str(failed.value)
    assert f"0 of the 3 load workers of deployment {NS}/{DEPLOYMENT}" in message
    assert "within 5 s" in message and "ErrImagePull" in message, message
    assert _deployment(kind) is None
    assert _worker_pods_gone(kind, target)


def test_the_workers_load_the_workload_through_its_service_by_cluster_dns(
    kind: KubeletCluster, target: KubernetesTarget
) -> None:
    kind.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "api", "namespace": NS},
                "spec": {"selector": {"app": "api"}, "ports": [{"name": "http", "port": 8080}]},
            }
        ]
    )
    assert target.load_endpoint("api") == f"http://api.{NS}.svc.cluster.local:8080"
