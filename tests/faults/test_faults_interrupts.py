"""Every fault type held by a real pytest session that then fails, is interrupted or is killed.

A small project (written to tmp_path) runs one chaos test on the fault test services
(tests/local_services/faults.yaml) that injects, through the plugin's fixtures, one fault
of each type: two network_blocks (pods both ways, a port), latency, a bandwidth toxic,
proxy_down, disk_fill, memory_stress and node_failure. It writes what it did to a state
file, and this test checks each fault from outside, on the system itself: the chains in
``iptables -S``, the toxics through the Toxiproxy API, the fill file and ``df``, the helper
process holding memory, the stopped pod processes. Then the session fails its test, gets
SIGINT or SIGTERM, or SIGKILL followed by ``pytest --chaos-cleanup``; afterwards all of
it must be gone and the ledger must say each fault was reverted.

Toxics: the local target's Toxiproxy is the embedded server, a child of the session that
dies with it. A Toxiproxy server keeps proxies and toxics in memory only, so its death takes
every toxic and every disabled proxy with it: after SIGKILL there is nothing left to undo
there, and the ledger's toxic entries are closed by the cleanup because the server is gone
(the reverter knows the embedded server by its version mark). The ledger outcomes of the
other runs show the toxics were removed through the API before the session ended.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from signals import sigint_deliverable

from pytest_resilience.faults import iptables
from pytest_resilience.ledger import Ledger, LedgerEntry
from pytest_resilience.toxiproxy import ToxiproxyClient

SERVICES = Path(__file__).parents[1] / "local_services" / "faults.yaml"
START_TIMEOUT_S = 90.0  # plugin, target, every fault, on a busy 2-core machine
EXIT_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 15.0
KINDS = {
    "network_block": 2,
    "latency": 1,
    "toxic": 1,
    "proxy_down": 1,
    "disk_fill": 1,
    "memory_stress": 1,
    "node_failure": 1,
}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="iptables chains, tmpfs volumes and memory cgroups need root",
)

HOLD = '''
"""Inject one fault of each type, tell the driver, then fail, or wait to be interrupted."""

import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

HOLD_S = 120.0  # a safety net should the driver die: it acts long before


@pytest.mark.chaos
def test_hold_every_fault(
    chaos_target, network_block, latency, toxic, proxy_down, disk_fill, memory_stress,
    node_failure,
):
    t = chaos_target
    pods = network_block("app=web", direction="both", action="reject")
    port = network_block(port=t.port_of("db"))
    slow = latency("db", ms=300)
    thin = toxic("db", "bandwidth", rate=16)
    down = proxy_down("db")
    fill = disk_fill("db", percent=90)
    hog = memory_stress("web", share=0.7)
    node_failure("node-a")  # last: it also stops the memory helpers, which live in the pods
    web = [p.pid for p in t.pods("app=web")]
    stopped = web + [c.pid for pid in web for c in psutil.Process(pid).children(True)]
    state = {
        "chains": [pods.fault.chain, port.fault.chain],
        "toxiproxy_url": t.toxiproxy_url,
        "toxiproxy_kind": t.toxiproxy_kind,
        "toxics": sorted([slow.fault.toxic_name, thin.fault.toxic_name]),
        "proxy_down": down.spec["was_enabled"],
        "fill": fill.spec["records"][0]["detail"]["file"],
        "volume": str(t.volume("db")),
        "hogs": hog.spec["records"][0]["detail"]["hogs"],
        "stopped": stopped + [h["pid"] for h in hog.spec["records"][0]["detail"]["hogs"]],
        "work_dir": str(t.work_dir),
    }
    path = Path(os.environ["E2E_STATE"])
    path.with_suffix(".partial").write_text(json.dumps(state))
    path.with_suffix(".partial").rename(path)  # atomic: never half a file
    if os.environ["E2E_MODE"] == "fail":
        release = Path(os.environ["E2E_RELEASE"])
        deadline = time.monotonic() + HOLD_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll period for the driver's go-ahead
        pytest.fail("failing mid-fault, on purpose")
    threading.Event().wait(HOLD_S)
    pytest.fail(f"nobody interrupted this session within {HOLD_S:g} s")
'''


@dataclass
class Held:
    proc: subprocess.Popen[bytes]
    project: Path
    ledger: Path
    output: Path
    state_file: Path
    release: Path
    state: dict[str, Any] | None = None

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Callable[[str], Held]]:
    """Start sessions holding every fault; whatever happens, leave nothing behind."""
    started: list[Held] = []

    def start(mode: str) -> Held:
        held = _start(tmp_path / f"run{len(started)}", mode)
        started.append(held)
        _wait_active(held)
        return held

    yield start
    for held in started:
        if held.proc.poll() is None:
            held.proc.kill()
        held.proc.wait()
        for chain in (held.state or {}).get("chains", []):
            iptables.remove(chain)


def _start(run_dir: Path, mode: str) -> Held:
    project = run_dir / "project"
    project.mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")  # its own rootdir, not the repository's
    (project / "services.yaml").write_text(
        SERVICES.read_text().replace("@HERE@", str(SERVICES.parent))
    )
    (project / "chaos_hold_all.py").write_text(textwrap.dedent(HOLD))
    held = Held(
        proc=None,  # type: ignore[arg-type]
        project=project,
        ledger=run_dir / "ledger.sqlite",
        output=run_dir / "out.txt",
        state_file=run_dir / "state.json",
        release=run_dir / "release",
    )
    env = {
        **os.environ,
        "E2E_STATE": str(held.state_file),
        "E2E_MODE": mode,
        "E2E_RELEASE": str(held.release),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with held.output.open("wb") as sink:
        held.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "chaos_hold_all.py",
                "--chaos-services=services.yaml",
                f"--chaos-ledger={held.ledger}",
            ],
            cwd=project,
            env=env,
            preexec_fn=sigint_deliverable,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return held


def _wait_active(held: Held) -> None:
    """Deadline-polled: the state file, then every fault seen from outside."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not held.state_file.exists():
        if held.proc.poll() is not None:
            pytest.fail(f"the session ended before its faults were active:\n{held.text()}")
        if time.monotonic() > deadline:
            held.proc.kill()
            pytest.fail(f"no faults active after {START_TIMEOUT_S:g} s:\n{held.text()}")
        time.sleep(0.05)  # poll period, not a synchronisation
    held.state = json.loads(held.state_file.read_text())
    _assert_every_fault_active(held.state)
    kinds: dict[str, int] = {}
    for entry in _entries(held.ledger, open_only=True, live=True):
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    assert kinds == KINDS


# -- the system, from outside --------------------------------------------------------------


def _assert_every_fault_active(state: dict[str, Any]) -> None:
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    for chain in state["chains"]:
        assert f"-N {chain}" in rules, rules
    client = ToxiproxyClient(state["toxiproxy_url"])
    assert sorted(t.name for t in client.toxics("db")) == state["toxics"]
    proxy = client.get_proxy("db")
    assert proxy is not None and not proxy.enabled
    assert Path(state["fill"]).exists()
    df = subprocess.run(
        ["df", "-B1", "--output=size,used", state["volume"]], capture_output=True, text=True
    ).stdout
    size, used = (int(v) for v in df.splitlines()[1].split())
    assert used / size >= 0.9, df
    for hog in state["hogs"]:
        helper = psutil.Process(hog["pid"])
        assert helper.create_time() == hog["create_time"]
        assert helper.memory_info().rss >= hog["bytes"]
    statuses = {psutil.Process(pid).status() for pid in state["stopped"]}
    assert statuses == {psutil.STATUS_STOPPED}


def _assert_nothing_left(held: Held, *, chains_gone: bool = True) -> None:
    state = held.state
    assert state is not None
    gone = [_process(pid) for pid in state["stopped"]]
    _, alive = psutil.wait_procs([p for p in gone if p is not None], timeout=GONE_TIMEOUT_S)
    stopped = [p.pid for p in alive if _status(p) == psutil.STATUS_STOPPED]
    assert not stopped, f"still stopped: {stopped}"
    for hog in state["hogs"]:
        helper = _process(hog["pid"])
        assert helper is None or helper.create_time() != hog["create_time"], "hog alive"
    assert not Path(state["fill"]).exists()
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    if chains_gone:
        assert not [chain for chain in state["chains"] if chain in rules], rules
    # The embedded Toxiproxy was the session's child and went with it, toxics and all.
    assert state["toxiproxy_kind"] == "embedded"
    _wait_refused(state["toxiproxy_url"])


def _wait_refused(url: str) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while True:
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=2).close()
        except ConnectionRefusedError:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Toxiproxy at {url} still answers after its session ended")
        time.sleep(0.05)  # poll period


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _status(process: psutil.Process) -> str | None:
    try:
        return process.status()
    except psutil.NoSuchProcess:
        return None


def _entries(path: Path, *, open_only: bool = False, live: bool = False) -> list[LedgerEntry]:
    """The run's ledger entries: all of them (ids count from 1), or the open ones."""
    ledger = Ledger(path)
    try:
        if open_only:
            return ledger.open_entries(include_live_owners=live)
        entries: list[LedgerEntry] = []
        while True:
            try:
                entries.append(ledger.get(len(entries) + 1))
            except KeyError:
                return entries
    finally:
        ledger.close_db()


def _outcomes(path: Path) -> dict[str, list[str | None]]:
    outcomes: dict[str, list[str | None]] = {}
    for entry in _entries(path):
        outcomes.setdefault(entry.kind, []).append(entry.outcome)
    return outcomes


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


# -- the tests -----------------------------------------------------------------------------


def test_a_test_failing_mid_fault_reverts_every_fault(hold) -> None:
    held = hold("fail")
    held.release.touch()
    code = held.proc.wait(timeout=EXIT_TIMEOUT_S)
    assert code == pytest.ExitCode.TESTS_FAILED, held.text()
    assert "failing mid-fault, on purpose" in held.text()
    _assert_nothing_left(held)
    assert _outcomes(held.ledger) == {k: ["reverted"] * n for k, n in KINDS.items()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_reverts_every_fault(hold, sig: signal.Signals) -> None:
    held = hold("wait")
    held.proc.send_signal(sig)
    code = held.proc.wait(timeout=EXIT_TIMEOUT_S)
    assert code == pytest.ExitCode.INTERRUPTED, held.text()
    _assert_nothing_left(held)
    assert _outcomes(held.ledger) == {k: ["reverted"] * n for k, n in KINDS.items()}


def test_sigkill_then_cleanup_reverts_every_fault(hold) -> None:
    held = hold("wait")
    held.proc.kill()
    held.proc.wait(timeout=EXIT_TIMEOUT_S)
    state = held.state
    assert state is not None

    # Died with the session: the pods and their helpers (parent-death signal, guardian), the
    # volume with its fill file, the embedded Toxiproxy with its toxics. Not the chains.
    _assert_nothing_left(held, chains_gone=False)
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert all(f"-N {chain}" in rules for chain in state["chains"])
    assert sorted(e.kind for e in _entries(held.ledger, open_only=True)) == sorted(
        k for k, n in KINDS.items() for _ in range(n)
    )

    cleanup = _pytest(held.project, "--chaos-cleanup", f"--chaos-ledger={held.ledger}")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
    # Only the chains outlived the session; every other entry is closed saying why.
    assert cleanup.stdout.count(": reverted") == KINDS["network_block"], cleanup.stdout
    settled = sum(KINDS.values()) - KINDS["network_block"]
    assert cleanup.stdout.count("closed, nothing left to undo: ") == settled, cleanup.stdout
    _assert_nothing_left(held)
    outcomes = _outcomes(held.ledger)
    assert outcomes.pop("network_block") == ["reverted by cleanup"] * KINDS["network_block"]
    why = {
        "latency": "the embedded Toxiproxy at",
        "toxic": "the embedded Toxiproxy at",
        "proxy_down": "the embedded Toxiproxy at",
        "disk_fill": "its fill file is gone",
        "memory_stress": "its memory helpers died with their session",
        "node_failure": "its paused pods died with their session",
    }
    assert {k: [o.partition(": ")[2][: len(why[k])] for o in v] for k, v in outcomes.items()} == {
        k: [why[k]] * KINDS[k] for k in why
    }, outcomes
    assert all(o.startswith("closed by cleanup: ") for v in outcomes.values() for o in v)

    again = _pytest(held.project, "--chaos-cleanup", f"--chaos-ledger={held.ledger}")
    assert again.returncode == 0 and "nothing open" in again.stdout, again.stdout
