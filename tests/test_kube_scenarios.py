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
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kube_kubelet import KubeletCluster, demo_manifests

REPO = Path(__file__).resolve().parents[1]
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
def kind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeletCluster]:
    """deploy/k8s/ applied to the emulator, every Deployment Ready with real processes."""
    with KubeletCluster(tmp_path_factory.mktemp("kind")) as cluster:
        cluster.add_nodes()
        cluster.apply(demo_manifests())
        cluster.wait_all_ready()
        yield cluster


def run_on_kubernetes(cluster: KubeletCluster, tmp_path: Path, *args: str) -> Outcome:
    """``pytest --chaos-target kubernetes ARGS`` in the repository, against ``cluster``."""
    kubeconfig = cluster.kubeconfig(tmp_path, context="kind-chaos", namespace=NAMESPACE)
    outcomes = tmp_path / "outcomes.json"
    command = [
        *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA"),
        *("--chaos-target", "kubernetes", "--chaos-namespace", NAMESPACE),
        *("--chaos-ledger", str(tmp_path / "ledger.sqlite")),
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


@pytest.mark.parametrize(
    "scenario",
    [
        "scenarios/test_pod_kill.py::test_api_survives_losing_a_replica",
        "scenarios/pod_kill_api.yaml::pod_kill_api",
    ],
)
def test_pod_kill_scenario_passes_on_kubernetes(
    kind: KubeletCluster, tmp_path: Path, scenario: str
) -> None:
    before = _api_pods(kind)
    connections = kind.proxy.connections
    outcome = run_on_kubernetes(kind, tmp_path, scenario)
    assert outcome.results == {scenario: "passed"}, outcome.output
    kind.wait_all_ready()
    after = _api_pods(kind)
    killed = set(before) - set(after)
    assert len(killed) == 1, (before, after)  # count: 1, replaced by the ReplicaSet
    assert len(after) == 3 and len(set(after) - set(before)) == 1, (before, after)
    assert not any(_alive(before[name]) for name in killed), "the killed pod's process lives"
    assert all(_alive(pid) for pid in after.values() if pid is not None)
    assert kind.proxy.connections > connections, "the load did not go through the Service"
