"""Extension actions run natively (``--chaostoolkit-native``), on the local target.

Published experiments of chaostoolkit-kubernetes and chaostoolkit-toxiproxy (sources in
tests/chaostoolkit/README.md) run in a pytester project against two replicas of a tiny
HTTP pod behind the embedded Toxiproxy; the extensions are not installed here, so every
mapped action can only have run through our faults. What is checked is what the run
left: pytest's verdict, the ledger (each action an entry, closed), the journal's lines.
The Kubernetes side of the same mappings is tests/kubernetes/test_chaostoolkit_native_kube.py.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pytest_resilience.ledger import Ledger, LedgerEntry

DATA = Path(__file__).parent
HTTP_POD = Path(__file__).parents[1] / "local_services" / "http_pod.py"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "scenarios").mkdir()
    text = (DATA / "native_services.yaml").read_text()
    text = text.replace("@HTTP_POD@", str(HTTP_POD)).replace("@PORT@", str(_free_port()))
    (pytester.path / "services.yaml").write_text(text)
    shutil.copy(DATA / "locustfile.py", pytester.path / "scenarios" / "locustfile.py")
    return pytester


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(project: pytest.Pytester) -> int:
    for line in (project.path / "services.yaml").read_text().splitlines():
        if line.strip().startswith("port:"):
            return int(line.split(":")[1])
    raise AssertionError("no port in services.yaml")


def _add(project: pytest.Pytester, name: str, change=None) -> Path:
    data = json.loads((DATA / name).read_text())
    if change is not None:
        change(data)
    path = project.path / "scenarios" / name
    path.write_text(json.dumps(data, indent=2))
    return path


def _run(project: pytest.Pytester, *args: str) -> pytest.RunResult:
    return project.runpytest_subprocess(
        "--chaos-services=services.yaml",
        "--chaos-ledger=ledger.sqlite",
        "--chaos-entry=my-app",
        "-p",
        "no:cacheprovider",
        *args,
    )


def _entries(project: pytest.Pytester) -> list[LedgerEntry]:
    path = project.path / "ledger.sqlite"
    if not path.exists():
        return []
    ledger = Ledger(path)
    try:
        rows = ledger._db.execute("SELECT id FROM entries ORDER BY id").fetchall()
        return [ledger.get(row[0]) for row in rows]
    finally:
        ledger.close_db()


def _healthy_probe(port: int) -> dict:
    """In place of chaosk8s.probes.microservice_available_and_healthy, which has no native
    mapping (a probe reads, it injects nothing): the service answers."""
    return {
        "name": "all-our-microservices-should-be-healthy",
        "type": "probe",
        "tolerance": 200,
        "provider": {"type": "http", "url": f"http://127.0.0.1:{port}/readyz", "timeout": 5},
    }


def test_the_extensions_are_not_installed_here() -> None:
    # what makes the tests below prove the mapping: nothing else could have acted
    assert importlib.util.find_spec("chaosk8s") is None
    assert importlib.util.find_spec("chaostoxi") is None


def test_terminate_pods_runs_as_a_ledgered_pod_kill(project: pytest.Pytester) -> None:
    port = _port(project)

    def change(data: dict) -> None:
        data["steady-state-hypothesis"]["probes"] = [_healthy_probe(port)]
        data["method"][0]["pauses"]["after"] = 0  # the README's 5 s, for nothing to wait on

    _add(project, "k8s_terminate_pod.json", change)

    result = _run(project, "--chaostoolkit-native", "-rA")

    result.assert_outcomes(passed=1)
    (entry,) = _entries(project)  # no rollbacks declared: only the action's own entry
    assert (entry.kind, entry.outcome) == ("pod_kill", "reverted")
    (killed,) = entry.spec["killed"]  # qty 1, rand among the pods the pattern matches
    assert killed in ("my-app-1", "my-app-2")
    assert entry.spec["signal"] == "SIGTERM"  # grace_period -1: the pod's own grace


def test_without_the_option_the_extension_is_needed(project: pytest.Pytester) -> None:
    _add(project, "k8s_terminate_pod.json")

    result = _run(project, "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*'chaosk8s.probes'*pip install chaostoolkit-kubernetes"])


def test_a_probe_without_mapping_still_needs_its_extension(project: pytest.Pytester) -> None:
    _add(project, "k8s_terminate_pod.json")  # its hypothesis probe is chaosk8s.probes

    result = _run(project, "--chaostoolkit-native", "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*steady-state-hypothesis.probes[[]0]*chaostoolkit-kubernetes"])


def test_toxiproxy_readme_actions_are_ledgered_and_undone_by_the_rollbacks(
    project: pytest.Pytester,
) -> None:
    port = _port(project)

    def change(data: dict) -> None:
        arguments = data["method"][0]["provider"]["arguments"]
        arguments.update(upstream_host="127.0.0.1", upstream_port=port, listen_port=0)
        data["method"][1]["provider"]["arguments"].update(latency=300, jitter=0)

    _add(project, "toxiproxy_latency.json", change)

    result = _run(project, "--chaostoolkit-native", "-rA")

    result.assert_outcomes(passed=1)
    rollbacks, proxy, toxic = _entries(project)
    assert (rollbacks.kind, rollbacks.outcome) == ("chaostoolkit_rollbacks", "reverted")
    assert rollbacks.spec["native"] is True  # a replay after SIGKILL maps them too
    assert (proxy.kind, proxy.outcome) == ("proxy_create", "reverted")
    assert proxy.spec["proxy"] == "myproxy" and proxy.spec["upstream"] == f"127.0.0.1:{port}"
    assert (toxic.kind, toxic.outcome) == ("latency", "reverted")
    assert (toxic.spec["proxy"], toxic.spec["toxic"]) == ("myproxy", "latency_toxic")


def test_an_argument_that_cannot_be_honoured_names_file_step_and_argument(
    project: pytest.Pytester,
) -> None:
    def change(data: dict) -> None:
        data["method"][0]["provider"]["arguments"]["order"] = "oldest"

    _add(project, "k8s_terminate_pod.json", change)

    result = _run(project, "--chaostoolkit-native", "--collect-only")

    result.stdout.fnmatch_lines(
        [
            "*k8s_terminate_pod.json, field '$.method[[]0].provider.arguments.order': "
            "step 'terminate-db-pod' (chaosk8s.pod.actions.terminate_pods): argument "
            "order='oldest' cannot be honoured: the target does not report pods' creation times*"
        ]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_an_unknown_argument_of_a_mapped_function_is_named(project: pytest.Pytester) -> None:
    def change(data: dict) -> None:
        data["method"][0]["provider"]["arguments"]["labels"] = "app=my-app"

    _add(project, "k8s_terminate_pod.json", change)

    result = _run(project, "--chaostoolkit-native", "--collect-only")

    result.stdout.fnmatch_lines(
        [
            "*field '$.method[[]0].provider.arguments.labels': step 'terminate-db-pod'*"
            "argument labels='app=my-app' is not an argument of "
            "chaosk8s.pod.actions.terminate_pods; it takes label_selector, name_pattern*"
        ]
    )


def test_the_option_has_an_ini_twin(project: pytest.Pytester) -> None:
    port = _port(project)
    project.makeini("[pytest]\nchaostoolkit_native = true\n")

    def change(data: dict) -> None:
        data["steady-state-hypothesis"]["probes"] = [_healthy_probe(port)]
        data["method"][0]["pauses"]["after"] = 0

    _add(project, "k8s_terminate_pod.json", change)

    result = _run(project)

    result.assert_outcomes(passed=1)
    assert [e.kind for e in _entries(project)] == ["pod_kill"]


def _k8s_action(step: str, module: str, func: str, **arguments: object) -> dict:
    provider = {"type": "python", "module": f"chaosk8s.{module}", "func": func}
    return {"type": "action", "name": step, "provider": {**provider, "arguments": arguments}}


def test_scale_and_drain_act_on_the_local_target_and_the_rollbacks_undo_them(
    project: pytest.Pytester,
) -> None:
    port = _port(project)
    experiment = {
        "title": "Scaled up and one node drained, the service answers",
        "description": "scale_deployment and drain_nodes on the local target, undone by rollbacks",
        "steady-state-hypothesis": {"title": "up", "probes": [_healthy_probe(port)]},
        "method": [
            _k8s_action(
                "scale-up", "deployment.actions", "scale_deployment", name="my-app", replicas=3
            ),
            _k8s_action(
                "drain-node-a",
                "node.actions",
                "drain_nodes",
                name="node-a",
                delete_pods_with_local_storage=True,
            ),
        ],
        "rollbacks": [
            _k8s_action("uncordon-node-a", "node.actions", "uncordon_node", name="node-a"),
            _k8s_action(
                "scale-back", "deployment.actions", "scale_deployment", name="my-app", replicas=2
            ),
        ],
    }
    (project.path / "scenarios" / "scale_drain.json").write_text(json.dumps(experiment))

    result = _run(project, "--chaostoolkit-native", "-rA")

    result.assert_outcomes(passed=1)
    rollbacks, scale, drain = _entries(project)
    assert (rollbacks.kind, rollbacks.outcome) == ("chaostoolkit_rollbacks", "reverted")
    assert (scale.kind, scale.outcome, scale.spec["previous"]) == ("scale", "reverted", 2)
    assert (drain.kind, drain.outcome) == ("node_drain", "reverted")
    assert drain.spec["schedulable"] == {"node-a": True}


def test_after_sigkill_chaos_cleanup_closes_what_died_with_the_session(
    project: pytest.Pytester,
) -> None:
    """Local pods and the embedded Toxiproxy die with their session: the replayed
    rollbacks find nothing to undo (and say so), every entry closes."""
    port = _port(project)

    def change(data: dict) -> None:
        arguments = data["method"][0]["provider"]["arguments"]
        arguments.update(upstream_host="127.0.0.1", upstream_port=port, listen_port=0)
        hold = {"type": "action", "name": "hold", "provider": {"type": "process", "path": "sleep"}}
        hold["provider"]["arguments"] = "300"
        data["method"][2] = hold

    _add(project, "toxiproxy_latency.json", change)
    args = [
        *("--chaos-services=services.yaml", "--chaos-ledger=ledger.sqlite"),
        *("--chaostoolkit-native", "-p", "no:cacheprovider"),
    ]
    output = project.path / "output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args],
            cwd=project.path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while len([e for e in _entries(project) if e.kind == "latency"]) < 1 or not [
            p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "sleep"
        ]:
            assert proc.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)  # polling the outside world, with a deadline
        holders = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for child in holders:
        if child.is_running():
            child.kill()
    psutil.wait_procs(holders, timeout=10)
    assert len([e for e in _entries(project) if e.closed_at is None]) == 3

    cleanup = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--chaos-cleanup"],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    assert [e for e in _entries(project) if e.closed_at is None] == [], cleanup.stdout
