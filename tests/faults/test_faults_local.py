"""Every fault against a real LocalTarget, checked on the system itself before, during, after.

The target runs tests/local_services/faults.yaml (two HTTP replicas with memory cgroups on
node-a, one proxied HTTP pod with a 16 MiB volume on node-b): real processes, the
target's own Toxiproxy, real iptables chains, a real tmpfs. What each test reads is what an
operator would look at: ``iptables -S``, the proxy's toxics through the Toxiproxy API, the
fill file and ``df``, the pod's memory cgroup, the pod processes' state. Whatever the way
the fault ends (context manager, teardown, the ledger reverter used after SIGKILL), the
system must be as it was before, and a dry run must touch nothing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_resilience.errors import ConfigError, FaultError, SelectorMatchedNothing
from pytest_resilience.faults.base import (
    ActiveFault,
    Fault,
    FaultContext,
    FaultSession,
    revert_entries,
)
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.faults.memory import MemoryStress
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.faults.pod_kill import PodKill
from pytest_resilience.faults.toxics import Latency, ProxyDown, Toxic
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets import iptables
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.targets.local.faults import FILL_PREFIX
from pytest_resilience.targets.local.memory import HOG_MODULE
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED, Timeline
from pytest_resilience.toxiproxy import ToxiproxyClient

SERVICES = Path(__file__).parents[1] / "local_services" / "faults.yaml"
MIB = 1024 * 1024
#: what a pod's memory cgroup may drift by between two readings (page cache, allocator)
MEMORY_SLACK = 8 * MIB
SETTLE_S = 15.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="iptables chains, tmpfs volumes and memory cgroups need root",
)


def start_target(place: Path) -> LocalTarget:
    """The fault test services, started (shared by tests/faults/test_faults_interrupts.py too)."""
    services = place / "services.yaml"
    services.write_text(SERVICES.read_text().replace("@HERE@", str(SERVICES.parent)))
    target = LocalTarget.from_file(services, work_dir=place / "work")
    target.start()
    return target


@pytest.fixture(scope="module")
def target() -> Iterator[LocalTarget]:
    # Not pytest's 0700 tmp dir: pods must reach their files.
    place = Path(tempfile.mkdtemp(prefix="pr-faults-"))
    place.chmod(0o755)
    target = start_target(place)
    try:
        yield target
    finally:
        target.close()
        shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def session(target: LocalTarget, ledger: Ledger) -> Iterator[FaultSession]:
    """The plugin's fault fixtures in miniature: whatever the test left, teardown reverts."""
    faults = FaultSession(target, ledger=ledger, timeline=Timeline("t"))
    yield faults
    faults.revert_all()


# -- the system's state, read the way an operator would ------------------------------------


@dataclass(frozen=True)
class State:
    iptables: tuple[str, ...]  # `iptables -S`, without other sessions' PYRES chains
    proxies: tuple[tuple[str, bool, tuple[str, ...]], ...]  # (proxy, enabled, toxics)
    fill_files: tuple[str, ...]
    disk_used: int  # bytes used on the db volume, as statvfs (df) says
    hogs: tuple[int, ...]  # memory_stress helpers in our pods
    stopped: tuple[str, ...]  # pods with a stopped (SIGSTOP) process
    ready: tuple[tuple[str, int], ...]  # ready replicas per workload
    memory: tuple[int, ...]  # usage of each web pod's memory cgroup (compared with slack)

    def without_memory(self) -> State:
        return replace(self, memory=())


def snapshot(target: LocalTarget, *, own_chains: frozenset[str] = frozenset()) -> State:
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True)
    lines = tuple(
        line
        for line in rules.stdout.splitlines()
        if "PYRES-" not in line or any(chain in line for chain in own_chains)
    )
    client = ToxiproxyClient(target.toxiproxy_url)
    proxies = tuple(
        (name, info.enabled, tuple(sorted(t.name for t in client.toxics(name))))
        for name, info in sorted(client.proxies().items())
    )
    volume = target.volume("db")
    assert volume is not None
    stats = os.statvfs(volume)
    pods = target.pods()
    groups = {p.pid for p in pods}
    hogs, stopped = [], []
    for process in psutil.process_iter():
        try:
            if HOG_MODULE in process.cmdline() and os.getpgid(process.pid) in groups:
                hogs.append(process.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    for pod in pods:
        try:
            leader = psutil.Process(pod.pid)
            tree = [leader, *leader.children(recursive=True)]
            if any(p.status() == psutil.STATUS_STOPPED for p in tree):
                stopped.append(pod.name)
        except psutil.NoSuchProcess:
            continue
    return State(
        iptables=lines,
        proxies=proxies,
        fill_files=tuple(sorted(p.name for p in volume.glob(f"{FILL_PREFIX}*"))),
        disk_used=(stats.f_blocks - stats.f_bfree) * stats.f_frsize,
        hogs=tuple(sorted(hogs)),
        stopped=tuple(sorted(stopped)),
        ready=tuple((w.name, w.ready_replicas) for w in target.workloads()),
        memory=tuple(target.memory_usage(p)[0] for p in target.pods("app=web")),
    )


def settled(target: LocalTarget, **options: frozenset[str]) -> State:
    """The state once every workload is back to its replicas (a resumed pod passes its
    health check again, a killed one is replaced): waited on with a deadline."""
    for workload in target.workloads():
        target.wait_ready(workload.name, timeout=SETTLE_S)
    return snapshot(target, **options)


def assert_restored(before: State, after: State) -> None:
    assert after.without_memory() == before.without_memory()
    for was, now in zip(before.memory, after.memory, strict=True):
        assert now <= was + MEMORY_SLACK, f"a web pod kept {(now - was) / MIB:.1f} MiB"


def hogs_of(handle: ActiveFault) -> list[dict[str, Any]]:
    """The memory helpers a memory_stress recorded (its change record's detail)."""
    (record,) = handle.spec["records"]
    return record["detail"]["hogs"]


def chains(fault: Fault) -> frozenset[str]:
    chain = getattr(fault, "chain", None)
    return frozenset({chain}) if chain else frozenset()


# -- what each fault looks like while it is active -----------------------------------------


def connect(port: int, *, timeout: float = 2.0) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=timeout).close()


def connect_from(target: LocalTarget, pod_selector: str, port: int) -> int:
    """Exit code of a connection attempt made from inside a pod (its cgroup): 0 connected."""
    code = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        "except OSError:\n"
        "    sys.exit(3)\n"
    )
    helper = target.spawn_in_pod(target.pods(pod_selector)[0], [sys.executable, "-c", code])
    return helper.wait(timeout=30)


def web_ports(target: LocalTarget) -> set[int]:
    return {port for pod in target.pods("app=web") for port in pod.ports}


def check_ingress(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    chain = handle.fault.chain
    rules = iptables.rules_of(chain)
    assert f"-A INPUT -j {chain}" in rules
    for port in web_ports(target):  # the service port and each pod's own
        assert (
            f"-A {chain} -i lo -p tcp -m tcp --dport {port} -j REJECT --reject-with tcp-reset"
            in rules
        )
        with pytest.raises(ConnectionRefusedError):  # REJECT with a TCP reset
            connect(port)
    connect(target.port_of("db"))  # only the web pods are cut off


def check_egress(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    chain = handle.fault.chain
    rules = iptables.rules_of(chain)
    assert f"-A OUTPUT -j {chain}" in rules
    for pod in target.pods("app=web"):
        assert any(f'--path "{pod.cgroup}"' in r for r in rules), rules
    assert connect_from(target, "app=web", target.port_of("db")) == 3
    assert connect_from(target, "app=db", target.port_of("db")) == 0  # the db pod is not
    connect(target.port_of("db"))  # nor this process


def check_both(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    rules = iptables.rules_of(handle.fault.chain)
    assert {f"-A {hook} -j {handle.fault.chain}" for hook in ("INPUT", "OUTPUT")} <= set(rules)
    with pytest.raises(ConnectionRefusedError):
        connect(target.port_of("web"))
    assert connect_from(target, "app=web", target.port_of("db")) == 3


def check_port(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    chain, port = handle.fault.chain, target.port_of("db")
    rules = iptables.rules_of(chain)
    assert f"-A INPUT -j {chain}" in rules
    assert f"-A {chain} -i lo -p tcp -m tcp --dport {port} -j DROP" in rules, rules
    with pytest.raises(TimeoutError):  # dropped: the SYN is never answered
        connect(port, timeout=0.3)
    connect(target.port_of("web"))


def proxy_state(target: LocalTarget, handle: ActiveFault):
    client = ToxiproxyClient(target.toxiproxy_url)
    return client.get_proxy("db"), client.toxics("db")


def check_latency(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    _, (toxic,) = proxy_state(target, handle)
    assert (toxic.name, toxic.type, toxic.stream) == (
        handle.fault.toxic_name,
        "latency",
        "downstream",
    )
    assert toxic.attributes["latency"] == 200
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.proxy_port("db")), timeout=5) as sock:
        sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert time.monotonic() - started >= 0.2  # a lower bound: the delay is the behaviour


def check_toxic(type_: str, attributes: dict[str, int]) -> Callable[..., None]:
    def check(target: LocalTarget, before: State, handle: ActiveFault) -> None:
        _, (toxic,) = proxy_state(target, handle)
        assert (toxic.name, toxic.type) == (handle.fault.toxic_name, type_)
        assert {k: toxic.attributes[k] for k in attributes} == attributes

    return check


def check_proxy_down(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    proxy, toxics = proxy_state(target, handle)
    assert proxy is not None and not proxy.enabled and toxics == []
    with pytest.raises(ConnectionRefusedError):
        connect(target.proxy_port("db"))


def check_disk(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    volume = target.volume("db")
    (record,) = handle.spec["records"]
    fill = Path(record["detail"]["file"])
    assert fill.parent == volume and fill.name.startswith(FILL_PREFIX) and fill.exists()
    stats = os.statvfs(volume)
    assert 1 - stats.f_bfree / stats.f_blocks >= 0.90
    df = subprocess.run(
        ["df", "-B1", "--output=size,used", str(volume)], capture_output=True, text=True
    )
    size, used = (int(v) for v in df.stdout.splitlines()[1].split())
    assert used / size >= 0.90, df.stdout
    assert fill.stat().st_blocks * 512 == used - before.disk_used  # the fill file is the change
    assert target.volume_usage("db") == pytest.approx(used / size)  # as df counts it


def check_memory(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    pods = target.pods("app=web")
    hogs = hogs_of(handle)
    assert len(hogs) == len(pods)
    for pod, hog in zip(pods, hogs, strict=True):
        used, limit = target.memory_usage(pod)
        assert limit == 128 * MIB
        assert 0.8 * limit - MEMORY_SLACK <= used < limit, used / MIB
        helper = psutil.Process(hog["pid"])
        assert helper.create_time() == hog["create_time"]
        assert os.getpgid(helper.pid) == pod.pid  # inside the pod: its group and cgroups
        assert (
            Path(f"/proc/{helper.pid}/cgroup").read_text()
            == Path(f"/proc/{pod.pid}/cgroup").read_text()
        )


def check_node(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    for pod in target.pods("app=web"):
        leader = psutil.Process(pod.pid)
        assert {p.status() for p in [leader, *leader.children(recursive=True)]} == {
            psutil.STATUS_STOPPED
        }
    assert {n.name: n.ready for n in target.nodes()} == {"node-a": False, "node-b": True}
    (db,) = target.pods("app=db")
    assert psutil.Process(db.pid).status() != psutil.STATUS_STOPPED


def check_pod_kill(target: LocalTarget, before: State, handle: ActiveFault) -> None:
    (killed,) = handle.spec["killed"]
    assert killed not in {p.name for p in target.pods() if p.ready}


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[LocalTarget], Fault]
    check: Callable[[LocalTarget, State, ActiveFault], None]


CASES = [
    Case("block-ingress", lambda t: NetworkBlock("app=web", action="reject"), check_ingress),
    Case(
        "block-egress",
        lambda t: NetworkBlock("app=web", direction="egress", action="reject"),
        check_egress,
    ),
    Case(
        "block-both",
        lambda t: NetworkBlock("app=web", direction="both", action="reject"),
        check_both,
    ),
    Case("block-port", lambda t: NetworkBlock(port=t.port_of("db")), check_port),
    Case("latency", lambda t: Latency("db", ms=200), check_latency),
    Case(
        "toxic-bandwidth",
        lambda t: Toxic("db", "bandwidth", rate=16),
        check_toxic("bandwidth", {"rate": 16}),
    ),
    Case(
        "toxic-reset-peer",
        lambda t: Toxic("db", "reset_peer", stream="upstream", timeout=100),
        check_toxic("reset_peer", {"timeout": 100}),
    ),
    Case("proxy-down", lambda t: ProxyDown("db"), check_proxy_down),
    Case("disk-fill", lambda t: DiskFill("db", percent=90), check_disk),
    Case("memory-stress", lambda t: MemoryStress("web", share=0.8), check_memory),
    Case("node-failure", lambda t: NodeFailure("node-a"), check_node),
    Case("node-outage", lambda t: NodeFailure("node-a", hang=True), check_node),
    Case("pod-kill", lambda t: PodKill("app=web", count=1, replaced_within_s=15), check_pod_kill),
]
BY_ID = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


# -- every fault, every way it ends --------------------------------------------------------


@BY_ID
def test_context_manager_reverts_and_marks_the_timeline(
    case: Case, target: LocalTarget, session: FaultSession, ledger: Ledger
) -> None:
    fault = case.make(target)
    before = settled(target, own_chains=chains(fault))
    with session.inject(fault) as handle:
        assert ledger.get(handle.entry_id).outcome is None  # open while active
        during = snapshot(target, own_chains=chains(fault))
        assert during.without_memory() != before.without_memory() or case.id == "memory-stress"
        case.check(target, before, handle)
    assert not handle.active
    assert ledger.get(handle.entry_id).outcome == "reverted"
    assert_restored(before, settled(target, own_chains=chains(fault)))
    timeline = session.ctx.timeline
    assert timeline is not None
    marks = [(e.kind, e.name) for e in timeline.events() if e.kind.startswith("fault")]
    assert marks == [(FAULT_INJECTED, fault.kind), (FAULT_REVERTED, fault.kind)]


@BY_ID
def test_a_call_is_reverted_at_teardown_and_revert_is_idempotent(
    case: Case, target: LocalTarget, ledger: Ledger
) -> None:
    fault = case.make(target)
    before = settled(target, own_chains=chains(fault))
    teardown = FaultSession(target, ledger=ledger)
    handle = teardown.inject(fault)
    case.check(target, before, handle)
    teardown.revert_all()  # what the fixture's teardown does
    restored = settled(target, own_chains=chains(fault))
    assert_restored(before, restored)
    handle.revert()  # a second revert does nothing, and changes nothing
    teardown.revert_all()
    assert_restored(before, settled(target, own_chains=chains(fault)))
    assert ledger.open_entries(include_live_owners=True) == []


@BY_ID
def test_a_failing_test_mid_fault_still_reverts(
    case: Case, target: LocalTarget, ledger: Ledger
) -> None:
    fault = case.make(target)
    before = settled(target, own_chains=chains(fault))
    failing = FaultSession(target, ledger=ledger)
    with pytest.raises(AssertionError, match="the test failed"), failing.inject(fault):
        raise AssertionError("the test failed while the fault was active")
    assert_restored(before, settled(target, own_chains=chains(fault)))
    assert ledger.open_entries(include_live_owners=True) == []


@BY_ID
def test_dry_run_touches_nothing(case: Case, target: LocalTarget, ledger: Ledger) -> None:
    fault = case.make(target)
    before = settled(target, own_chains=chains(fault))
    timeline = Timeline("dry")
    dry = FaultSession(target, ledger=ledger, timeline=timeline, dry_run=True)
    with dry.inject(fault):
        assert_restored(before, snapshot(target, own_chains=chains(fault)))
        assert ledger.open_entries(include_live_owners=True) == []
    assert_restored(before, settled(target, own_chains=chains(fault)))
    assert [e.detail.get("dry_run") for e in timeline.events()] == [True, True]


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id != "pod-kill"],
    ids=[c.id for c in CASES if c.id != "pod-kill"],
)
def test_the_ledger_reverter_alone_undoes_it(
    case: Case, target: LocalTarget, session: FaultSession, ledger: Ledger
) -> None:
    """What `--chaos-cleanup` runs after a SIGKILL: only the ledger's spec, no fault object."""
    fault = case.make(target)
    before = settled(target, own_chains=chains(fault))
    handle = session.inject(fault)
    entry = ledger.get(handle.entry_id)
    outcomes = revert_entries([entry], ledger, FaultContext(target=target))
    assert [outcome for _, outcome in outcomes] == ["reverted"]
    state = snapshot(target, own_chains=chains(fault))
    assert replace(state, ready=before.ready).without_memory() == before.without_memory()
    handle.revert()  # the in-process revert after the ledger's: nothing left, no error
    assert_restored(before, settled(target, own_chains=chains(fault)))


def test_memory_stress_reports_the_share_and_a_spike_frees_at_once(
    target: LocalTarget, session: FaultSession
) -> None:
    before = settled(target)
    (pod, _) = target.pods("app=web")
    handle = session.inject(MemoryStress("web", share=0.5, count=1))
    (hog,) = hogs_of(handle)
    assert hog["pod"] == pod.name and hog["bytes"] > 0
    used, limit = target.memory_usage(pod)
    assert 0.5 * limit - MEMORY_SLACK <= used <= 0.5 * limit + MEMORY_SLACK
    handle.revert()
    spike = session.inject(MemoryStress("web", share=0.6, hold=False))
    assert len(hogs_of(spike)) == 2  # each grew to 60%, then let go
    spike.revert()
    assert_restored(before, settled(target))


# -- bad input: a clear error, nothing touched ---------------------------------------------


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda t: Toxic("db", "latencyy"), ConfigError, "unknown toxic type 'latencyy'"),
        (
            lambda t: Toxic("db", "latency", latncy=5),
            ConfigError,
            "unknown attribute 'latncy' for toxic 'latency'; valid attributes: latency, jitter",
        ),
        (lambda t: DiskFill("db", percent=0), FaultError, "within 1..99, got 0"),
        (lambda t: DiskFill("db", percent=100), FaultError, "within 1..99, got 100"),
        (lambda t: MemoryStress("web", share=0), ConfigError, "strictly between 0 and 1"),
        (lambda t: MemoryStress("web", share=1.2), ConfigError, "got 1.2"),
        (lambda t: NetworkBlock(port=70000), FaultError, "port must be 1..65535"),
    ],
    ids=[
        "toxic-type",
        "toxic-attribute",
        "percent-0",
        "percent-100",
        "share-0",
        "share-1.2",
        "port-range",
    ],
)
def test_bad_arguments_are_refused_when_the_fault_is_made(
    target: LocalTarget, make, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=_literal(message)):
        make(target)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda t: DiskFill("db", path="/etc"),
            FaultError,
            "disk_fill: path '/etc' is not on the volume of 'db'",
        ),
        (
            lambda t: DiskFill("db", path="../../outside"),
            FaultError,
            "is not on the volume of 'db'",
        ),
        (lambda t: DiskFill("web"), SelectorMatchedNothing, "service 'web' declares no volume"),
        (
            lambda t: NetworkBlock(port=_free_port()),
            FaultError,
            "network_block: nothing listens on TCP port",
        ),
        (
            lambda t: MemoryStress("db"),
            FaultError,
            "service 'db' has no memory limit",
        ),
        (lambda t: MemoryStress("nosuch"), SelectorMatchedNothing, "services: db, web"),
        (lambda t: Latency("nosuch", ms=10), SelectorMatchedNothing, "proxies there: db"),
        (lambda t: NodeFailure("node-z"), SelectorMatchedNothing, "no node named 'node-z'"),
    ],
    ids=[
        "path-off-volume",
        "path-escapes",
        "no-volume",
        "port-unused",
        "no-memory-limit",
        "no-such-service",
        "no-such-proxy",
        "no-such-node",
    ],
)
def test_bad_targets_are_refused_and_leave_nothing(
    target: LocalTarget, ledger: Ledger, make, error: type[Exception], message: str
) -> None:
    before = settled(target)
    faults = FaultSession(target, ledger=ledger)
    with pytest.raises(error, match=_literal(message)) as caught:
        faults.inject(make(target))
    if "memory limit" in message:
        assert "memory_limit_mb" in str(caught.value)
    assert_restored(before, settled(target))
    assert ledger.open_entries(include_live_owners=True) == []


def _literal(text: str) -> str:
    import re

    return re.escape(text)


# -- the demo: what memory_stress looks like to the service's own metrics -------------------


def _metric(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_memory_stress_on_the_demo_api_shows_in_its_metrics(ledger: Ledger) -> None:
    demo = Path(__file__).parents[2] / "src/pytest_resilience/demo/services.yaml"
    place = Path(tempfile.mkdtemp(prefix="pr-faults-demo-"))
    place.chmod(0o755)
    try:
        with LocalTarget.from_file(demo, work_dir=place / "work") as target:
            pod = target.pods("app=api")[0]
            port = target.pod_port(pod)
            limit = _metric(port, "demo_memory_limit_bytes")
            assert limit == 256 * MIB
            before = _metric(port, "demo_memory_usage_bytes")
            assert before < 0.5 * limit
            with FaultSession(target, ledger=ledger).inject(MemoryStress("api", count=1)):
                during = _metric(port, "demo_memory_usage_bytes")
                assert during >= 0.8 * limit - MEMORY_SLACK, during / MIB
                assert target.memory_usage(pod)[0] >= 0.8 * limit - MEMORY_SLACK
            assert _metric(port, "demo_memory_usage_bytes") <= before + MEMORY_SLACK
    finally:
        shutil.rmtree(place, ignore_errors=True)
