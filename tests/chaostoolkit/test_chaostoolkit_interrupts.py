"""An experiment's rollbacks run whatever ends its session: Ctrl-C, SIGTERM, SIGKILL.

A real pytest session runs tests/chaostoolkit/interrupt_mid_method.json, whose method
switches a file to French and then holds (a long ``sleep``). Once the ledger holds the
armed rollbacks and the file says bonjour, the session is interrupted; the rollback's side
effect (the file back in English) and the ledger say what ran. After SIGKILL the rollback
has not run, and ``pytest --chaos-cleanup`` plays it from the ledger alone.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from signals import sigint_deliverable

from pytest_resilience.ledger import Ledger, LedgerEntry

DATA = Path(__file__).parent
HOLD_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 60.0


@dataclass
class Session:
    proc: subprocess.Popen[bytes]
    project: Path
    output: Path
    descendants: list[psutil.Process] = field(default_factory=list)

    @property
    def locale(self) -> Path:
        return self.project / "scenarios" / "default.locale.txt"

    @property
    def ledger(self) -> Path:
        return self.project / "ledger.sqlite"

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def _pytest(project: Path, *args: str, **kwargs) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--chaos-services=services.yaml",
            "--chaos-ledger=ledger.sqlite",
            *args,
        ],
        cwd=project,
        preexec_fn=sigint_deliverable,
        **kwargs,
    )


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Session]:
    """A session held in the middle of the experiment's method; nothing outlives the test."""
    project = tmp_path / "project"
    (project / "scenarios").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")  # own rootdir, none of our config
    shutil.copy(DATA / "services.yaml", project)
    shutil.copy(DATA / "interrupt_mid_method.json", project / "scenarios")
    (project / "scenarios" / "default.locale.txt").write_text("welcome=hello\n")
    output = tmp_path / "output.txt"
    with output.open("wb") as out:
        proc = _pytest(project, "-s", stdout=out, stderr=subprocess.STDOUT)
    session = Session(proc, project, output)
    try:
        _wait_held(session)
        yield session
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for child in session.descendants:
            if child.is_running():
                child.kill()
        psutil.wait_procs(session.descendants, timeout=10)


def _wait_held(session: Session) -> None:
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while time.monotonic() < deadline:
        assert session.proc.poll() is None, session.text()
        holding = [
            p
            for p in psutil.Process(session.proc.pid).children(recursive=True)
            if p.name() == "sleep"
        ]
        if holding and "bonjour" in session.locale.read_text() and _open(session):
            session.descendants = psutil.Process(session.proc.pid).children(recursive=True)
            return
        time.sleep(0.1)  # polling the outside world, with a deadline
    raise AssertionError(f"the session never held the method:\n{session.text()}")


def _entries(session: Session) -> list[LedgerEntry]:
    if not session.ledger.exists():
        return []
    ledger = Ledger(session.ledger)
    try:
        rows = ledger._db.execute("SELECT id FROM entries ORDER BY id").fetchall()
        return [ledger.get(row[0]) for row in rows]
    finally:
        ledger.close_db()


def _open(session: Session) -> list[LedgerEntry]:
    return [e for e in _entries(session) if e.closed_at is None]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_mid_method_runs_the_rollback(held: Session, sig: signal.Signals) -> None:
    held.proc.send_signal(sig)
    code = held.proc.wait(timeout=EXIT_TIMEOUT_S)

    output = held.text()
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert held.locale.read_text() == "welcome=hello\n", output
    (entry,) = _entries(held)
    assert (entry.kind, entry.outcome) == ("chaostoolkit_rollbacks", "reverted")
    # the held `sleep` of the method went with the session
    _gone, alive = psutil.wait_procs(held.descendants, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]


def test_sigkill_leaves_the_rollback_to_chaos_cleanup(held: Session) -> None:
    held.proc.kill()
    held.proc.wait(timeout=EXIT_TIMEOUT_S)
    assert held.locale.read_text() == "welcome=bonjour\n"
    (entry,) = _open(held)
    assert entry.kind == "chaostoolkit_rollbacks"

    cleanup = _pytest(held.project, "--chaos-cleanup", stdout=subprocess.PIPE, text=True)
    out, _ = cleanup.communicate(timeout=EXIT_TIMEOUT_S)

    assert cleanup.returncode == 0, out
    assert f"ledger #{entry.id} chaostoolkit_rollbacks" in out and out.rstrip().endswith(
        "reverted"
    ), out
    assert held.locale.read_text() == "welcome=hello\n"
    assert _open(held) == []
    assert _entries(held)[0].outcome == "reverted by cleanup"
