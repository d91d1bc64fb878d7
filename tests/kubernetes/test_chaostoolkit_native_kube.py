"""Extension actions run natively on the Kubernetes target (kmock's emulator).

The same published experiments as tests/chaostoolkit/test_chaostoolkit_native.py, in a pytester
session with ``--chaos-target=kubernetes --chaostoolkit-native`` against the emulator of
tests/kube_controllers (a Deployment ``api`` of 3 Ready pods on 3 nodes, its ReplicaSet
controller, scheduler, kubelet and Eviction API stand-ins). The emulator's pods run no
process, so the experiments' HTTP probes are left out; what is checked is what the API
server saw (deletes, execs, scale patches, evictions, cordons) and the ledger.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from kube_controllers import DEPLOYMENTS, NODES, EmulatedCluster

from pytest_resilience.ledger import Ledger, LedgerEntry

DATA = Path(__file__).parents[1] / "chaostoolkit"
NS = "chaos-demo"


def _run(
    pytester: pytest.Pytester, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, *args: str
) -> pytest.RunResult:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return pytester.runpytest_subprocess(
        "--chaos-target=kubernetes",
        "--kube-context=kind-test",
        f"--chaos-namespace={NS}",
        "--chaos-ledger=ledger.sqlite",
        "--chaostoolkit-native",
        "-p",
        "no:cacheprovider",
        *args,
    )


def _add(pytester: pytest.Pytester, name: str, change) -> None:
    data = json.loads((DATA / name).read_text())
    change(data)
    (pytester.path / "scenarios").mkdir(exist_ok=True)
    (pytester.path / "scenarios" / name).write_text(json.dumps(data, indent=2))


def _entries(pytester: pytest.Pytester) -> list[LedgerEntry]:
    ledger = Ledger(pytester.path / "ledger.sqlite")
    try:
        rows = ledger._db.execute("SELECT id FROM entries ORDER BY id").fetchall()
        return [ledger.get(row[0]) for row in rows]
    finally:
        ledger.close_db()


def _on_api(data: dict) -> None:
    """The README experiment aimed at the emulated Deployment, in the run's namespace."""
    data.pop("steady-state-hypothesis")  # chaosk8s.probes: no native mapping (see README)
    data["method"][0]["pauses"]["after"] = 0
    data["method"][0]["provider"]["arguments"].update(
        label_selector="app=api", name_pattern="^api-", ns=NS
    )


def test_terminate_pods_sends_sigterm_to_one_pod_and_waits_for_it(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _add(pytester, "k8s_terminate_pod.json", _on_api)

    result = _run(pytester, kubeconfig, monkeypatch, "-rA")

    result.assert_outcomes(passed=1)
    (entry,) = _entries(pytester)
    assert (entry.kind, entry.target, entry.outcome) == ("pod_kill", "kubernetes", "reverted")
    (killed,) = entry.spec["killed"]
    # grace_period -1 (the pod's own grace): SIGTERM to the app, as the kubelet sends it
    assert (NS, killed, None, ["sh", "-c", "kill -TERM 1"]) in [
        (ns, pod, container, argv) for ns, pod, container, argv in cluster.exec_log
    ]


def test_grace_period_zero_is_a_grace_zero_delete(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def change(data: dict) -> None:
        _on_api(data)
        data["method"][0]["provider"]["arguments"]["grace_period"] = 0

    _add(pytester, "k8s_terminate_pod.json", change)
    before = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}

    result = _run(pytester, kubeconfig, monkeypatch)

    result.assert_outcomes(passed=1)
    (entry,) = _entries(pytester)
    (killed,) = entry.spec["killed"]
    deletes = [r for r in cluster.requests() if r.method == "DELETE" and killed in r.path]
    assert deletes and killed in before
    after = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    assert killed not in after and len(after) == 3  # replaced before the entry closed


def test_the_default_namespace_is_refused_naming_the_argument(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def change(data: dict) -> None:
        _on_api(data)
        del data["method"][0]["provider"]["arguments"]["ns"]  # chaosk8s' default: "default"

    _add(pytester, "k8s_terminate_pod.json", change)
    mutating = len(cluster.mutating_requests())

    result = _run(pytester, kubeconfig, monkeypatch)

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ended aborted*",
            "*k8s_terminate_pod.json, field '$.method[[]0].provider.arguments.ns': step "
            "'terminate-db-pod'*argument ns='default' is not the namespace this run acts in "
            "(chaos-demo); run with --chaos-namespace default*",
        ]
    )
    assert cluster.mutating_requests()[mutating:] == []


def _scale(replicas: int) -> dict:
    return {
        "type": "action",
        "name": f"scale-api-to-{replicas}",
        "provider": {
            "type": "python",
            "module": "chaosk8s.deployment.actions",
            "func": "scale_deployment",
            "arguments": {"name": "api", "replicas": replicas, "ns": NS},
        },
    }


def test_scale_deployment_is_ledgered_and_its_rollback_closes_it(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    experiment = {
        "title": "One replica of the api is enough",
        "description": "scale_deployment down in the method, back up in the rollbacks",
        "method": [_scale(1)],
        "rollbacks": [_scale(3)],
    }
    (pytester.path / "scenarios").mkdir()
    (pytester.path / "scenarios" / "scale.json").write_text(json.dumps(experiment))

    result = _run(pytester, kubeconfig, monkeypatch, "-rA")

    result.assert_outcomes(passed=1)
    rollbacks, scale = _entries(pytester)
    assert rollbacks.kind == "chaostoolkit_rollbacks"
    assert (scale.kind, scale.outcome) == ("scale", "reverted")
    assert (scale.spec["workload"], scale.spec["previous"]) == ("api", 3)
    patches = [r for r in cluster.requests() if r.method == "PATCH" and r.subresource == "scale"]
    assert len(patches) == 2  # down by the method, up by the rollback (which closed the entry)
    assert cluster.obj(DEPLOYMENTS, NS, "api")["spec"]["replicas"] == 3


def test_drain_node_experiment_drains_and_its_rollback_uncordons(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = str(next(iter(cluster.pods_of(NS, "api")))["spec"]["nodeName"])

    def change(data: dict) -> None:
        # its probes: a broken URL upstream, and chaosk8s.pod.probes (no native mapping)
        data["steady-state-hypothesis"]["probes"] = []
        data["method"][0]["provider"]["arguments"]["name"] = node
        data["rollbacks"][0]["provider"]["arguments"]["name"] = node

    _add(pytester, "drain_node.json", change)

    result = _run(pytester, kubeconfig, monkeypatch, "-rA")

    result.assert_outcomes(passed=1)
    rollbacks, drain = _entries(pytester)
    assert (rollbacks.kind, rollbacks.outcome) == ("chaostoolkit_rollbacks", "reverted")
    assert (drain.kind, drain.outcome) == ("node_drain", "reverted")
    assert drain.spec["schedulable"] == {node: True}
    evictions = [r for r in cluster.requests() if r.subresource == "eviction"]
    assert evictions
    assert not cluster.obj(NODES, None, node)["spec"].get("unschedulable")


def test_drain_without_local_storage_consent_is_refused_at_collection(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def change(data: dict) -> None:
        data["steady-state-hypothesis"]["probes"] = []
        del data["method"][0]["provider"]["arguments"]["delete_pods_with_local_storage"]

    _add(pytester, "drain_node.json", change)

    result = _run(pytester, kubeconfig, monkeypatch, "--collect-only")

    result.stdout.fnmatch_lines(
        [
            "*drain_node.json, field "
            "'$.method[[]0].provider.arguments.delete_pods_with_local_storage': step "
            "'drain_node' (chaosk8s.node.actions.drain_nodes): argument "
            "delete_pods_with_local_storage cannot be honoured: a native drain evicts every pod*"
        ]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_after_sigkill_chaos_cleanup_replays_the_mapped_rollback(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = str(next(iter(cluster.pods_of(NS, "api")))["spec"]["nodeName"])

    def change(data: dict) -> None:
        data["steady-state-hypothesis"]["probes"] = []
        data["method"][0]["provider"]["arguments"]["name"] = node
        data["rollbacks"][0]["provider"]["arguments"]["name"] = node
        hold = {"type": "action", "name": "hold", "provider": {"type": "process", "path": "sleep"}}
        hold["provider"]["arguments"] = "300"
        data["method"].append(hold)

    _add(pytester, "drain_node.json", change)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    args = [
        *("--chaos-target=kubernetes", "--kube-context=kind-test", f"--chaos-namespace={NS}"),
        *("--chaos-ledger=ledger.sqlite", "--chaostoolkit-native", "-p", "no:cacheprovider"),
    ]
    output = pytester.path / "output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", *args],
            cwd=pytester.path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_held(proc, pytester, output)
        assert cluster.obj(NODES, None, node)["spec"].get("unschedulable") is True
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
    assert [e.kind for e in _entries(pytester) if e.closed_at is None] == [
        "chaostoolkit_rollbacks",
        "node_drain",
    ]

    cleanup = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "--chaos-cleanup"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    # the rollback (uncordon_node) replayed natively: chaosk8s is not installed here
    assert "chaostoolkit_rollbacks" in cleanup.stdout and "revert failed" not in cleanup.stdout
    assert [e.outcome for e in _entries(pytester)] == ["reverted by cleanup"] * 2
    assert not cluster.obj(NODES, None, node)["spec"].get("unschedulable")


def _wait_held(proc: subprocess.Popen[bytes], pytester: pytest.Pytester, output: Path) -> None:
    """Until the method holds (its `sleep` runs) with the drain in the ledger."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, output.read_text(errors="replace")
        sleeping = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "sleep"
        ]
        ledger = pytester.path / "ledger.sqlite"
        if sleeping and ledger.exists() and len(_entries(pytester)) == 2:
            return
        time.sleep(0.1)  # polling the outside world, with a deadline
    raise AssertionError(f"the session never held the method:\n{output.read_text()}")


# -- terminate_pods' selection, in process against the emulator ------------------------------


@pytest.fixture
def native(target: Any, tmp_path: Path) -> Iterator[Any]:
    from pytest_resilience.chaostoolkit.native import NativeActions
    from pytest_resilience.faults.base import FaultSession

    ledger = Ledger(tmp_path / "ledger.sqlite")
    session = FaultSession(target, ledger=ledger)
    try:
        yield NativeActions(target, session, source="experiment.json")
    finally:
        session.revert_all()
        ledger.close_db()


def _terminate(native: Any, **arguments: Any) -> Any:
    provider = {
        "type": "python",
        "module": "chaosk8s.pod.actions",
        "func": "terminate_pods",
        "arguments": {"ns": NS, "grace_period": 0, **arguments},
    }
    return native.call(provider, where="$.method[0]", step="kill", phase="method", configuration={})


@pytest.mark.parametrize(
    ("arguments", "count"),
    [
        ({"label_selector": "app=api"}, 1),  # qty 1, mode fixed
        ({"label_selector": "app=api", "qty": 2}, 2),
        ({"label_selector": "app=api", "mode": "percentage", "qty": 50}, 2),  # ceil(1.5)
        ({"label_selector": "app=api", "all": True, "qty": 1}, 3),  # all wins over qty
        ({"label_selector": "app=api", "qty": 10}, 3),  # capped at what matched
        ({"label_selector": "app=nothing"}, 0),  # nothing matched: nothing killed, no error
    ],
    ids=["default", "fixed-2", "percentage-50", "all", "capped", "none"],
)
def test_terminate_pods_selects_as_the_extension_does(
    native: Any, cluster: EmulatedCluster, arguments: dict, count: int
) -> None:
    names = sorted(p["metadata"]["name"] for p in cluster.pods_of(NS, "api"))

    killed = _terminate(native, **arguments)

    assert len(killed) == count
    # not random unless rand: the first ones in alphabetic order, as the extension
    assert killed == names[:count]
    assert len(native.held) == (1 if count else 0)


def test_terminate_pods_filters_by_name_pattern(native: Any, cluster: EmulatedCluster) -> None:
    last = sorted(p["metadata"]["name"] for p in cluster.pods_of(NS, "api"))[-1]

    killed = _terminate(native, label_selector="app=api", name_pattern=f"{last[-5:]}$")

    assert killed == [last]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"qty": -1}, "Cannot select pods. Quantity '-1' is negative."),
        ({"mode": "half"}, "Cannot select pods. Mode 'half' is invalid."),
    ],
)
def test_terminate_pods_fails_as_the_extension_fails(
    native: Any, arguments: dict, message: str
) -> None:
    from pytest_resilience.chaostoolkit.providers import ActivityFailed

    with pytest.raises(ActivityFailed, match=re.escape(message)):
        _terminate(native, label_selector="app=api", **arguments)
    assert native.held == []
