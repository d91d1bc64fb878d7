"""Every fault on the Kubernetes target, end to end: FaultSession, a real ledger file, the
official client against kmock's emulator with the test controllers (tests/kube_controllers),
revert, cleanup from the ledger alone after a SIGKILL, ``--chaos-cleanup`` of changes made
from another machine, dry runs, and the plugin with ``--chaos-target=kubernetes``."""

# ruff: noqa: F401 - pytest fixtures imported from kube_controllers
from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_controllers import DEPLOYMENTS, NODES, PODS, EmulatedCluster

from pytest_resilience.cleanup import cleanup
from pytest_resilience.errors import FaultError
from pytest_resilience.faults.base import FaultContext, FaultSession, is_settled, revert_entries
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.faults.memory import MemoryStress
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.faults.pod_kill import PodKill
from pytest_resilience.ledger import Ledger
from pytest_resilience.run import ChaosRun
from pytest_resilience.settings import ChaosSettings
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.kubernetes.faults import FAULT_ANNOTATION, RECORD_ANNOTATION_PREFIX
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED, Timeline

NS = "chaos-demo"
DB_MOUNT = "/var/lib/postgresql"
# du -sk of the data volume (an emptyDir with sizeLimit 1Gi): 256 MiB used, so 90% means
# 665.6 MiB more, 666 MiB
DU_QUARTER_USED = f"262144\t{DB_MOUNT}\n"


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close_db()


@pytest.fixture
def timeline() -> Timeline:
    return Timeline("kubernetes e2e")


@pytest.fixture
def session(target: KubernetesTarget, ledger: Ledger, timeline: Timeline) -> Iterator[FaultSession]:
    s = FaultSession(target, ledger=ledger, timeline=timeline)
    yield s
    s.revert_all()


@pytest.fixture
def db(cluster: EmulatedCluster) -> str:
    """A one-replica Deployment with a data volume, as a Postgres would have; its pod's name."""
    labels = {"app": "db"}
    cluster.add(
        DEPLOYMENTS,
        NS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "db", "namespace": NS, "uid": "uid-dep-db", "generation": 1},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "postgres",
                                "image": "postgres:16",
                                "volumeMounts": [
                                    {
                                        "name": "token",
                                        "mountPath": "/var/run/secrets/kubernetes.io/sa",
                                        "readOnly": True,
                                    },
                                    {"name": "data", "mountPath": DB_MOUNT},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "token", "projected": {"sources": []}},
                            {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                        ],
                    },
                },
            },
        },
    )
    assert cluster.emu is not None
    cluster.run(cluster.emu._reconcile(NS, "db"))
    (pod,) = cluster.eventually(
        lambda: [
            p for p in cluster.pods_of(NS, "db") if p.get("status", {}).get("phase") == "Running"
        ]
    )
    return str(pod["metadata"]["name"])


def df_reply(cluster: EmulatedCluster) -> None:
    cluster.exec_replies.append((lambda argv: argv[:2] == ["du", "-sk"], (0, DU_QUARTER_USED, "")))


def _a_node_of(cluster: EmulatedCluster, app: str) -> str:
    """A node running a pod of ``app``: discovered from the cluster, never assumed."""
    return str(next(iter(cluster.pods_of(NS, app)))["spec"]["nodeName"])


def annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return obj["metadata"].get("annotations") or {}


def marked(obj: dict[str, Any] | None) -> bool:
    return any(k.startswith("pytest-resilience/") for k in annotations(obj))


def assert_closed(ledger: Ledger, entry_id: int | None, outcome: str = "reverted") -> None:
    assert entry_id is not None
    entry = ledger.get(entry_id)
    assert entry.closed_at is not None and entry.outcome == outcome


def assert_marks(timeline: Timeline, kind: str) -> None:
    assert [e.name for e in timeline.events(FAULT_INJECTED)] == [kind]
    assert [e.name for e in timeline.events(FAULT_REVERTED)] == [kind]


# ------------------------------------------------------------------- each fault, reverted


def test_network_block(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger, timeline: Timeline
) -> None:
    handle = session.inject(NetworkBlock("app=api", port=5432, direction="egress"))
    ledger_id = handle.fault.ledger_id
    assert ledger_id == f"{ledger.session}#{handle.entry_id}"
    spec = ledger.get(handle.entry_id).spec  # type: ignore[arg-type]
    assert len(spec["records"]) == 3 and spec == {**spec, **handle.spec}
    pods = [p["metadata"]["name"] for p in cluster.pods_of(NS, "api")]
    for name, record in zip(sorted(pods), spec["records"], strict=True):
        obj = cluster.obj(PODS, NS, name)
        assert obj is not None
        (eph,) = obj["spec"]["ephemeralContainers"]
        assert eph["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
        assert eph["name"] == record["detail"]["container"]
        # annotated with the ledger id, which exists only once the entry is written
        assert annotations(obj)[FAULT_ANNOTATION] == ledger_id
        chain = record["detail"]["chains"]["out"]
        assert cluster.containers[(NS, name)].hooks == {f"OUTPUT {chain}"}
        (script,) = [
            argv[2]
            for ns, pod, container, argv in cluster.exec_log
            if pod == name and container == eph["name"] and "iptables -A" in argv[-1]
        ]
        assert f"iptables -A {chain} -p tcp --dport 5432 -j DROP" in script

    handle.revert()
    for name in pods:
        assert cluster.containers[(NS, name)].hooks == set()
        assert not marked(cluster.obj(PODS, NS, name))
    assert_closed(ledger, handle.entry_id)
    assert_marks(timeline, "network_block")


def test_network_block_reject_ingress_all_ports(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger
) -> None:
    with session.inject(NetworkBlock("app=api", direction="ingress", action="reject")) as handle:
        script = cluster.exec_log[-1][3][2]
        assert "-j REJECT" in script and "! -i lo" in script and "OUTPUT" not in script
    assert_closed(ledger, handle.entry_id)


def test_network_block_leaves_a_terminating_pod_alone(
    session: FaultSession, cluster: EmulatedCluster, target: KubernetesTarget, ledger: Ledger
) -> None:
    # A pod in its grace period (an eviction, a rollout) is still listed, then deleted by
    # its kubelet at any moment: a fault that picked it failed with NotFound mid-inject.
    cluster.termination_s = 60.0
    leaving = sorted(p["metadata"]["name"] for p in cluster.pods_of(NS, "api"))[0]
    target._core.delete_namespaced_pod(leaving, NS, grace_period_seconds=30)
    assert cluster.obj(PODS, NS, leaving)["metadata"]["deletionTimestamp"]  # type: ignore[index]
    handle = session.inject(NetworkBlock("app=api", port=5432, direction="egress"))
    named = [r["objects"][0]["name"] for r in ledger.get(handle.entry_id).spec["records"]]  # type: ignore[union-attr]
    assert leaving not in named and named
    assert "ephemeralContainers" not in cluster.obj(PODS, NS, leaving)["spec"]  # type: ignore[index]


def test_network_block_without_selector_is_a_clear_error(session: FaultSession) -> None:
    with pytest.raises(Exception, match="needs a pod selector"):
        session.inject(NetworkBlock(port=5432))


def test_disk_fill(
    session: FaultSession,
    cluster: EmulatedCluster,
    ledger: Ledger,
    timeline: Timeline,
    db: str,
) -> None:
    df_reply(cluster)
    handle = session.inject(DiskFill("db", percent=90))
    (record,) = ledger.get(handle.entry_id).spec["records"]  # type: ignore[arg-type]
    path = record["detail"]["file"]
    assert path.startswith(f"{DB_MOUNT}/.pytest-resilience-fill-")
    assert record["detail"]["container"] == "postgres"
    assert cluster.containers[(NS, db)].files == {path: 666}
    assert annotations(cluster.obj(PODS, NS, db))[FAULT_ANNOTATION] == handle.fault.ledger_id
    handle.revert()
    assert cluster.containers[(NS, db)].files == {}
    assert not marked(cluster.obj(PODS, NS, db))
    assert_closed(ledger, handle.entry_id)
    assert_marks(timeline, "disk_fill")


def test_volume_usage_is_du_against_the_volumes_bound(
    target: KubernetesTarget, cluster: EmulatedCluster, db: str
) -> None:
    df_reply(cluster)  # 256 MiB in the emptyDir of sizeLimit 1Gi
    assert target.volume_usage("db") == 0.25
    (argv,) = [a for _, pod, _, a in cluster.exec_log if pod == db]
    assert argv == ["du", "-sk", DB_MOUNT]


def test_disk_fill_when_already_full_changes_nothing(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger, db: str
) -> None:
    df_reply(cluster)
    with session.inject(DiskFill("db", percent=10)) as handle:
        assert handle.spec == {"records": []}
        assert (NS, db) not in cluster.containers or not cluster.containers[(NS, db)].files
    assert_closed(ledger, handle.entry_id)


def test_memory_stress(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger, timeline: Timeline
) -> None:
    handle = session.inject(MemoryStress("api", mb=256))
    spec = ledger.get(handle.entry_id).spec  # type: ignore[arg-type]
    assert len(spec["records"]) == 3
    for record in spec["records"]:
        (pod,) = [o["name"] for o in record["objects"]]
        assert cluster.containers[(NS, pod)].files == {record["detail"]["pidfile"]: 0}
        (argv,) = [a for _, name, _, a in cluster.exec_log if name == pod and "python3" in a[-1]]
        assert "256 << 20" in argv[2]
    handle.revert()
    assert all(not m.files for m in cluster.containers.values())
    assert not any(marked(p) for p in cluster.items(PODS, NS))
    assert_closed(ledger, handle.entry_id)
    assert_marks(timeline, "memory_stress")


def test_memory_stress_needs_mb_on_kubernetes(session: FaultSession, ledger: Ledger) -> None:
    with pytest.raises(Exception, match="give mb="):
        session.inject(MemoryStress("api"))


def test_node_failure(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger, timeline: Timeline
) -> None:
    busy = _a_node_of(cluster, "api")
    victims = [
        p["metadata"]["name"] for p in cluster.pods_of(NS, "api") if p["spec"]["nodeName"] == busy
    ]
    handle = session.inject(NodeFailure(busy))
    node = cluster.obj(NODES, None, busy)
    assert node is not None and node["spec"]["unschedulable"] is True
    assert annotations(node)[FAULT_ANNOTATION] == handle.fault.ledger_id
    (record,) = handle.spec["records"]
    assert sorted(record["detail"]["evicted"]) == sorted(f"{NS}/{v}" for v in victims)
    assert ledger.get(handle.entry_id).spec["node"] == busy  # type: ignore[arg-type]
    evictions = [r for r in cluster.requests() if r.subresource == "eviction"]
    assert len(evictions) == len(victims)
    session.ctx.target.wait_ready("api", timeout=10)
    assert all(p["spec"]["nodeName"] != busy for p in cluster.pods_of(NS, "api"))

    handle.revert()
    node = cluster.obj(NODES, None, busy)
    assert node is not None and "unschedulable" not in node["spec"] and not marked(node)
    assert_closed(ledger, handle.entry_id)
    assert_marks(timeline, "node_failure")


def test_pod_kill(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger, timeline: Timeline
) -> None:
    before = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    handle = session.inject(PodKill("app=api"))
    (killed,) = handle.fault.killed  # type: ignore[attr-defined]
    assert killed in before and cluster.obj(PODS, NS, killed) is None
    deletes = [r for r in cluster.requests() if r.method == "DELETE"]
    assert [(d.path.rsplit("/", 1)[-1], d.query.get("gracePeriodSeconds")) for d in deletes] == [
        (killed, "0")
    ]
    handle.revert()  # waits until the Deployment is back to 3 ready replicas
    ready = [
        p["metadata"]["name"]
        for p in cluster.pods_of(NS, "api")
        if {"type": "Ready", "status": "True"} in p.get("status", {}).get("conditions", [])
    ]
    assert len(ready) == 3 and killed not in ready
    assert_closed(ledger, handle.entry_id)
    assert_marks(timeline, "pod_kill")


def test_a_node_outage_is_refused_naming_the_capability(
    session: FaultSession, cluster: EmulatedCluster, ledger: Ledger
) -> None:
    # a NotReady node with its pods still on it: the kubelet's heartbeat would put Ready
    # back on a status patch, and no API call stops a kind node's container
    busy = _a_node_of(cluster, "api")
    with pytest.raises(FaultError, match="capability 'node_outage'"):
        session.inject(NodeFailure(busy, hang=True))
    node = cluster.obj(NODES, None, busy)
    assert node is not None and "unschedulable" not in node["spec"] and not marked(node)
    assert ledger.open_entries(include_live_owners=True) == []


# --------------------------------------------------------------- after a crash: cleanup

_CRASHING_RUN = """
import sys
from pathlib import Path

from pytest_resilience.faults.base import FaultSession
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets.kubernetes import KubernetesTarget

kubeconfig, ledger_path, node = sys.argv[1:]
target = KubernetesTarget(kubeconfig=kubeconfig, namespace="chaos-demo")
session = FaultSession(target, ledger=Ledger(Path(ledger_path)))
session.inject(DiskFill("db", percent=90))
session.inject(NodeFailure(node))
target.wait_ready("api", timeout=10)
# the emulator SIGKILLs this process while the iptables exec is in flight
session.inject(NetworkBlock("app=api", port=5432, direction="egress"))
print("not killed")
"""


def test_cleanup_from_the_ledger_alone_after_sigkill(
    cluster: EmulatedCluster, kubeconfig: Path, tmp_path: Path, db: str
) -> None:
    df_reply(cluster)
    db_node = cluster.obj(PODS, NS, db)["spec"]["nodeName"]  # type: ignore[index]
    node = next(
        n["metadata"]["name"]
        for n in cluster.items(NODES, None)
        if n["metadata"]["name"] != db_node
    )
    ledger_path = tmp_path / "crash.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_RUN, str(kubeconfig), str(ledger_path), node],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def kill_mid_inject(argv: list[str]) -> bool:
        if "iptables -A" in argv[-1]:
            os.kill(child.pid, signal.SIGKILL)  # the rules land, the reply never arrives
        return False

    cluster.exec_replies.append((kill_mid_inject, (0, "", "")))
    _, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, err

    # the crashed run left all three in the cluster, and open in its ledger
    api = [p["metadata"]["name"] for p in cluster.pods_of(NS, "api")]
    assert any(cluster.containers[(NS, p)].hooks for p in api if (NS, p) in cluster.containers)
    assert cluster.containers[(NS, db)].files
    assert cluster.obj(NODES, None, node)["spec"]["unschedulable"] is True  # type: ignore[index]

    ledger = Ledger(ledger_path)
    try:
        entries = ledger.open_entries()
        assert sorted(e.kind for e in entries) == ["disk_fill", "network_block", "node_failure"]
        (net,) = [e for e in entries if e.kind == "network_block"]
        # killed mid-inject: the first pod's record was written ahead, before it was touched
        assert [r["kind"] for r in net.spec["records"]] == ["network_block"]
        with KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NS) as fresh:
            outcomes = revert_entries(entries, ledger, FaultContext(target=fresh))
            assert [o for _, o in outcomes] == ["reverted"] * 3
            assert fresh.find_marked() == []
        assert ledger.open_entries(include_live_owners=True) == []
    finally:
        ledger.close_db()
    for key, model in cluster.containers.items():
        assert model.hooks == set() and model.files == {}, key
    node_obj = cluster.obj(NODES, None, node)
    assert "unschedulable" not in node_obj["spec"] and not marked(node_obj)  # type: ignore[index]
    assert not any(marked(p) for p in cluster.items(PODS, NS))


def test_chaos_cleanup_undoes_changes_made_from_another_machine(
    cluster: EmulatedCluster,
    kubeconfig: Path,
    target: KubernetesTarget,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "another machine": its ledger file is not ours, and its process is gone (the
    # session object is dropped without a revert)
    elsewhere = Ledger(tmp_path / "elsewhere.sqlite", session="ci-runner-7-4242-1700000000")
    other = _a_node_of(cluster, "api")
    lost = FaultSession(target, ledger=elsewhere).inject(NodeFailure(other))
    lost_id = lost.fault.ledger_id
    elsewhere.close_db()
    del lost  # that process is gone: nothing at this interpreter's exit may revert it
    gc.collect()
    # a run of this machine, still going: its entry is open in our ledger
    ours = Ledger(tmp_path / "ours.sqlite")
    running = FaultSession(target, ledger=ours)
    live = running.inject(NetworkBlock("app=api", port=80))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings = ChaosSettings(
        target="kubernetes", kube_context="kind-test", namespace=NS, ledger=ours.path
    )
    run = ChaosRun(settings)
    try:
        assert cleanup(run) == 0
    finally:
        run.close()
    out = capsys.readouterr().out
    assert f"node_failure on node {other} (ledger id {lost_id}): reverted" in out
    assert out.count(f"(ledger id {live.fault.ledger_id}): left, its entry is open") == 3
    node = cluster.obj(NODES, None, other)
    assert node is not None and "unschedulable" not in node["spec"] and not marked(node)
    assert {r.ledger_id for r in target.find_marked()} == {live.fault.ledger_id}
    running.revert_all()
    assert target.find_marked() == []
    ours.close_db()


def test_chaos_cleanup_refuses_an_unknown_context(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    settings = ChaosSettings(
        target="kubernetes", kube_context="prod", namespace=NS, ledger=tmp_path / "l.sqlite"
    )
    run = ChaosRun(settings)
    try:
        assert cleanup(run) == 1
    finally:
        run.close()
    assert "cannot open the kubernetes target: context 'prod' not found" in capsys.readouterr().out


# ------------------------------------------------------------------------------ dry run


def _every_fault(node: str) -> list[Any]:
    return [
        PodKill("app=api"),
        NetworkBlock("app=api", port=5432),
        DiskFill("db", percent=90),
        NodeFailure(node),
        MemoryStress("api", mb=64),
    ]


@pytest.mark.parametrize("where", ["session", "target"])
def test_dry_run_sends_no_mutating_request(
    cluster: EmulatedCluster, kubeconfig: Path, ledger: Ledger, db: str, where: str
) -> None:
    """``--chaos-dry-run`` sets both; each alone must already keep the cluster untouched."""
    before = len(cluster.mutating_requests())
    with KubernetesTarget(
        kubeconfig=str(kubeconfig), namespace=NS, dry_run=where == "target"
    ) as dry:
        session = FaultSession(dry, ledger=ledger, dry_run=where == "session")
        handles = [session.inject(f) for f in _every_fault(_a_node_of(cluster, "api"))]
        for handle in reversed(handles):
            handle.revert()
        assert all(h.reverted_at is not None for h in handles)
        if where == "target":
            assert any("ephemeralcontainers" in c for c in dry.dry_run_calls)
            assert any(c.startswith("CREATE eviction") for c in dry.dry_run_calls)
    assert cluster.mutating_requests()[before:] == []
    assert ledger.open_entries(include_live_owners=True) == []


# ----------------------------------------------------------------------- the plugin, e2e

_CHAOS_TEST = """
import pytest

@pytest.mark.chaos
def test_kill_one_api_pod(chaos_target, pod_kill, timeline):
    assert chaos_target.name == "kubernetes"
    assert (chaos_target.context, chaos_target.namespace) == ("kind-test", "chaos-demo")
    assert chaos_target.dry_run is {dry_run}
    with pod_kill("app=api") as fault:
        assert len(fault.fault.killed) == {killed}
    assert fault.reverted_at is not None
"""


@pytest.mark.parametrize("dry_run", [False, True], ids=["live", "dry-run"])
def test_plugin_runs_a_chaos_test_on_kubernetes(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
    dry_run: bool,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    pytester.makepyfile(_CHAOS_TEST.format(dry_run=dry_run, killed=0 if dry_run else 1))
    before = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    mutating = len(cluster.mutating_requests())
    ledger_path = pytester.path / "ledger.sqlite"
    args = [
        "--chaos-target=kubernetes",
        "--kube-context=kind-test",
        f"--chaos-namespace={NS}",
        f"--chaos-ledger={ledger_path}",
        "-p",
        "no:cacheprovider",
        *(["--chaos-dry-run"] if dry_run else []),
    ]
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(passed=1)
    after = {p["metadata"]["name"] for p in cluster.pods_of(NS, "api")}
    if dry_run:
        assert after == before and cluster.mutating_requests()[mutating:] == []
        return
    assert len(before - after) == 1 and len(after) == 3
    ledger = Ledger(ledger_path)
    try:
        (entry,) = [ledger.get(1)]
        assert entry.kind == "pod_kill" and entry.target == "kubernetes"
        assert entry.outcome == "reverted"
    finally:
        ledger.close_db()


def test_sigkill_by_exec_is_an_option(
    pytester: pytest.Pytester, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real SIGKILL (kill -KILL -1 by exec, the app under an init) instead of a grace-0
    # delete, whose kubelet still sends SIGTERM first: the scenario's run asks for it
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    pytester.makepyfile(
        """
        def test_it(chaos_target):
            assert chaos_target.sigkill_by_exec is True
        """
    )
    result = pytester.runpytest_subprocess(
        "--chaos-target=kubernetes",
        "--kube-context=kind-test",
        f"--chaos-namespace={NS}",
        f"--chaos-ledger={pytester.path / 'ledger.sqlite'}",
        "--kube-sigkill-by-exec",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)


def test_the_doctor_asks_the_api_server_for_each_permission_and_names_what_is_missing(
    pytester: pytest.Pytester,
    cluster: EmulatedCluster,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_resilience.targets.kubernetes.preflight import NEEDED_ACCESS

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cluster.forbid("POST", "pods", "eviction")  # the runner's Role lacks create pods/eviction
    before = len(cluster.requests())
    result = pytester.runpytest_subprocess(
        "--chaos-doctor",
        "--chaos-target=kubernetes",
        "--kube-context=kind-test",
        f"--chaos-namespace={NS}",
        "-p",
        "no:cacheprovider",
    )
    out = result.stdout.str()
    assert re.search(r"MISS create pods/eviction +node_failure \(drain\)  -> grant it", out), out
    assert re.search(r"ok   delete pods +pod_kill", out), out
    assert "could not ask" not in out and out.count("MISS") == 1, out
    asked = cluster.requests()[before:]
    reviews = [r for r in asked if r.path.endswith("selfsubjectaccessreviews")]
    assert len(reviews) == len(NEEDED_ACCESS) and {r.method for r in reviews} == {"POST"}


def test_plugin_refuses_a_system_namespace(
    pytester: pytest.Pytester, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    pytester.makepyfile(_CHAOS_TEST.format(dry_run=False, killed=1))
    result = pytester.runpytest_subprocess(
        "--chaos-target=kubernetes",
        "--kube-context=kind-test",
        "--chaos-namespace=kube-system",
        f"--chaos-ledger={pytester.path / 'ledger.sqlite'}",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*chaos target did not start:*kube-system*"])


_KILLED_AT_A_WRITE = """
import os, signal, sys
from pathlib import Path

from pytest_resilience.faults.base import FaultSession
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets.kubernetes import KubernetesTarget

kubeconfig, ledger_path, fault, kill_at = sys.argv[1:]
writes = 0
write = Ledger.update_spec


def update_spec(self, entry_id, spec):  # the real write, then SIGKILL at the n-th
    global writes
    if int(kill_at) == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    write(self, entry_id, spec)
    writes += 1
    if writes == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


Ledger.update_spec = update_spec
target = KubernetesTarget(kubeconfig=kubeconfig, namespace="chaos-demo")
FaultSession(target, ledger=Ledger(Path(ledger_path))).inject(eval(fault))
print("not killed after", writes, "writes", flush=True)
"""


@pytest.mark.parametrize(
    "fault",
    ['NetworkBlock("app=api", port=5432, direction="egress")', "NodeFailure(NODE)"],
    ids=["network_block", "node_failure"],
)
def test_a_sigkill_at_any_ledger_write_leaves_nothing_cleanup_cannot_settle(
    cluster: EmulatedCluster, kubeconfig: Path, tmp_path: Path, fault: str
) -> None:
    """Killed before the first write (entry open, nothing recorded), or after any write: the
    record of a pod not yet touched, of a container never added, of a change half made.
    A cleanup from the ledger alone closes every entry and the cluster holds none of it."""
    busy = _a_node_of(cluster, "api")
    fault = fault.replace("NODE", repr(busy))
    for kill_at in range(0, 20):
        ledger_path = tmp_path / f"kill-{kill_at}.sqlite"
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                _KILLED_AT_A_WRITE,
                str(kubeconfig),
                str(ledger_path),
                fault,
                str(kill_at),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if child.returncode == 0:  # fewer writes than kill_at: every moment was seen
            assert "not killed after" in child.stdout and kill_at >= 3, child.stdout
            return
        assert child.returncode == -signal.SIGKILL, child.stderr
        ledger = Ledger(ledger_path)
        try:
            entries = ledger.open_entries()
            assert len(entries) == 1, (kill_at, entries)
            with KubernetesTarget(kubeconfig=str(kubeconfig), namespace=NS) as fresh:
                outcomes = revert_entries(entries, ledger, FaultContext(target=fresh))
                assert all(is_settled(o) for _, o in outcomes), (kill_at, outcomes)
                assert fresh.find_marked() == [], kill_at
            assert ledger.open_entries(include_live_owners=True) == [], kill_at
        finally:
            ledger.close_db()
        for key, model in cluster.containers.items():
            assert model.hooks == set(), (kill_at, key)
        assert not any(marked(p) for p in cluster.items(PODS, NS)), kill_at
        node = cluster.obj(NODES, None, busy)
        assert not node["spec"].get("unschedulable") and not marked(node), kill_at  # type: ignore[index]
    pytest.fail(f"{fault}: still writing its ledger entry after 20 writes")
