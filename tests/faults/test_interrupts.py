"""Whatever ends a chaos session, nothing stays broken: Ctrl-C, SIGTERM, SIGKILL.

Each test runs a real pytest session (tests/e2e_projects/interrupts) whose chaos test
holds a network_block (a real iptables chain) and then blocks. Once the ledger shows the
fault open and the chain is in ``iptables -S`` the session is interrupted, and the test
checks what is left: processes, ports, ledger entries, iptables chains, the work dir.
After SIGKILL the fault is expected to survive, and ``--chaos-cleanup`` or the next
session must revert it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from signals import sigint_deliverable

from pytest_resilience.faults import iptables
from pytest_resilience.ledger import Ledger, LedgerEntry

PROJECT = Path(__file__).parents[1] / "e2e_projects" / "interrupts"
START_TIMEOUT_S = 90.0  # the demo's Postgres on a busy 2-core machine
EXIT_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 15.0

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="the held fault is a network_block: needs root and iptables",
)


@dataclass
class HeldSession:
    """A pytest session holding a network_block, as seen from outside."""

    proc: subprocess.Popen[bytes]
    project: Path
    ledger: Path
    output: Path
    state: Path
    chain: str = ""
    work_dir: Path | None = None
    ports: list[int] = field(default_factory=list)
    descendants: list[psutil.Process] = field(default_factory=list)

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def held_session(tmp_path: Path) -> Iterator[Callable[..., HeldSession]]:
    """Start sessions that hold a fault; whatever the test does, leave nothing behind."""
    started: list[HeldSession] = []

    def start(*, demo: bool = False) -> HeldSession:
        session = _start(tmp_path / f"run{len(started)}", demo=demo)
        started.append(session)
        _wait_fault_active(session)
        return session

    yield start
    for session in started:
        if session.proc.poll() is None:
            session.proc.kill()
        session.proc.wait()
        psutil.wait_procs(session.descendants, timeout=GONE_TIMEOUT_S)
        if session.chain:
            iptables.remove(session.chain)
        if session.work_dir is not None:
            shutil.rmtree(session.work_dir, ignore_errors=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_reverts_and_stops_everything(held_session, sig: signal.Signals) -> None:
    session = held_session()

    session.proc.send_signal(sig)
    code = session.proc.wait(timeout=EXIT_TIMEOUT_S)

    output = session.text()
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output or "signal 15" in output, output
    _assert_nothing_left(session)
    assert _open_entries(session.ledger) == []
    (entry,) = _all_entries(session.ledger)
    assert entry.outcome == "reverted"
    assert session.work_dir is not None and not session.work_dir.exists()


def test_sigkill_leaves_the_fault_and_cleanup_reverts_it(held_session) -> None:
    session = held_session(demo=True)  # the demo: Postgres children must not outlive us either

    session.proc.kill()
    session.proc.wait(timeout=EXIT_TIMEOUT_S)

    # The pods die with the session (parent-death signal + guardian), the fault does not.
    _assert_no_process_left(session)
    _assert_ports_free(session.ports)
    (entry,) = _open_entries(session.ledger)
    assert (entry.kind, entry.spec["chain"], entry.pid) == (
        "network_block",
        session.chain,
        session.proc.pid,
    )
    assert _chain_present(session.chain)

    first = _pytest(session.project, "--chaos-cleanup", f"--chaos-ledger={session.ledger}")
    assert first.returncode == 0, first.stdout
    assert f"ledger #{entry.id} network_block" in first.stdout
    assert f"{session.chain})): reverted" in first.stdout
    assert not _chain_present(session.chain)
    assert _open_entries(session.ledger) == []
    assert _all_entries(session.ledger)[0].outcome == "reverted by cleanup"

    second = _pytest(session.project, "--chaos-cleanup", f"--chaos-ledger={session.ledger}")
    assert second.returncode == 0, second.stdout
    assert f"chaos cleanup: nothing open in {session.ledger}" in second.stdout


def test_next_session_reverts_leftovers_and_says_so(held_session) -> None:
    session = held_session()
    session.proc.kill()
    session.proc.wait(timeout=EXIT_TIMEOUT_S)
    assert _chain_present(session.chain)

    result = _pytest(
        session.project,
        "chaos_settle.py",
        "--chaos-services=services.yaml",
        f"--chaos-ledger={session.ledger}",
    )

    assert result.returncode == 0, result.stdout
    summary = result.stdout.split(" resilience ", 1)[-1]
    assert f"network_block (reject ingress of pods 'app=web' (iptables chain {session.chain}))" in (
        summary
    ), result.stdout
    assert f"left open by pid {session.proc.pid}: reverted" in summary, result.stdout
    assert not _chain_present(session.chain)
    assert _open_entries(session.ledger) == []


# -- the session under test ----------------------------------------------------------------


def _start(run_dir: Path, *, demo: bool) -> HeldSession:
    project = run_dir / "project"
    shutil.copytree(PROJECT, project)
    ledger, state, output = run_dir / "ledger.sqlite", run_dir / "state.json", run_dir / "out.txt"
    args = ["chaos_hold.py", f"--chaos-ledger={ledger}"]
    if not demo:
        args.append("--chaos-services=services.yaml")
    env = {**os.environ, "E2E_STATE": str(state), "PYTHONDONTWRITEBYTECODE": "1"}
    env["E2E_SELECTOR"] = "app=api" if demo else "app=web"
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=project,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=sigint_deliverable,
        )
    return HeldSession(proc=proc, project=project, ledger=ledger, output=output, state=state)


def _wait_fault_active(session: HeldSession) -> None:
    """Poll the ledger and iptables (deadline, no sleep-and-hope) until the fault holds."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if session.proc.poll() is not None:
            pytest.fail(f"the session ended before its fault was active:\n{session.text()}")
        if session.ledger.exists() and session.state.exists():
            entries = _open_entries(session.ledger, include_live_owners=True)
            state: dict[str, Any] = json.loads(session.state.read_text())
            if entries and _chain_present(state["chain"]):
                assert entries[0].spec["chain"] == state["chain"]
                session.chain = state["chain"]
                session.work_dir = Path(state["work_dir"])
                session.ports = list(state["ports"])
                session.descendants = psutil.Process(session.proc.pid).children(recursive=True)
                assert set(state["pids"]) <= {p.pid for p in session.descendants}
                return
        time.sleep(0.05)  # poll period, not a synchronisation
    session.proc.kill()
    pytest.fail(f"no active network_block after {START_TIMEOUT_S:g} s:\n{session.text()}")


def _pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S + 60,
    )


# -- what must be left (nothing) -------------------------------------------------------------


def _assert_nothing_left(session: HeldSession) -> None:
    _assert_no_process_left(session)
    _assert_ports_free(session.ports)
    assert not _chain_present(session.chain), iptables.rules_of(session.chain)


def _assert_no_process_left(session: HeldSession) -> None:
    _, alive = psutil.wait_procs(session.descendants, timeout=GONE_TIMEOUT_S)
    assert not alive, [(p.pid, _cmdline(p)) for p in alive]
    assert session.work_dir is not None
    mention = str(session.work_dir)
    stray = [(p.pid, _cmdline(p)) for p in psutil.process_iter() if mention in _cmdline(p)]
    assert not stray


def _assert_ports_free(ports: list[int]) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    busy = list(ports)
    while busy and time.monotonic() < deadline:
        busy = [port for port in busy if not _port_free(port)]
        if busy:
            time.sleep(0.05)
    assert not busy, f"still bound: {busy}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a leftover
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def _chain_present(chain: str) -> bool:
    return bool(iptables.rules_of(chain))


def _open_entries(path: Path, *, include_live_owners: bool = True) -> list[LedgerEntry]:
    ledger = Ledger(path)
    try:
        return ledger.open_entries(include_live_owners=include_live_owners)
    finally:
        ledger.close_db()


def _all_entries(path: Path) -> list[LedgerEntry]:
    ledger = Ledger(path)
    try:
        entries, entry_id = [], 1
        while True:
            try:
                entries.append(ledger.get(entry_id))
            except KeyError:
                return entries
            entry_id += 1
    finally:
        ledger.close_db()
