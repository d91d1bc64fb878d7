"""A SIGKILLed session's work dir (``pytest-resilience-*`` in the temp dir) does not pile up.

Real pytest sessions run a tiny project whose test holds ``chaos_target`` and blocks; one is
SIGKILLed (its work dir stays behind, nothing could remove it), another stays alive. Then
``--chaos-cleanup``, or simply the next session, removes the dead session's dir and leaves
the live one's alone. Each run gets its own TMPDIR, so only these sessions' dirs are judged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 120.0

HOLD = """
import json, os, threading
from pathlib import Path


def test_hold(chaos_target):
    state = Path(os.environ["E2E_STATE"])
    state.with_suffix(".partial").write_text(json.dumps({"work_dir": str(chaos_target.work_dir)}))
    state.with_suffix(".partial").rename(state)  # atomic: never half a file
    threading.Event().wait()  # held until this session is killed
"""

COME_UP = """
def test_comes_up(chaos_target):
    assert chaos_target.pods()
"""

SERVICES = """
services:
  - name: idle
    versions: {v1: ["{python}", "-c", "import threading; threading.Event().wait()"]}
"""


@dataclass
class Session:
    proc: subprocess.Popen[bytes]
    work_dir: Path
    output: Path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    place = tmp_path / "project"
    place.mkdir()
    (place / "pytest.ini").write_text("[pytest]\n")  # own rootdir, not the repository's config
    (place / "hold.py").write_text(HOLD)
    (place / "come_up.py").write_text(COME_UP)
    (place / "services.yaml").write_text(SERVICES)
    (tmp_path / "tmp").mkdir()
    return place


def session_env(project: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TMPDIR": str(project.parent / "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def pytest_args(project: Path, *args: str) -> list[str]:
    ledger = project.parent / "ledger.sqlite"
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args,
            "--chaos-services=services.yaml", f"--chaos-ledger={ledger}"]  # fmt: skip


@pytest.fixture
def hold(project: Path) -> Iterator:
    """Start sessions that hold their target; each is killed and its dir removed at the end."""
    started: list[Session] = []

    def start(name: str) -> Session:
        state, output = project.parent / f"{name}.json", project.parent / f"{name}.out"
        with output.open("wb") as sink:
            proc = subprocess.Popen(
                pytest_args(project, "hold.py"),
                cwd=project,
                env=session_env(project, E2E_STATE=str(state)),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not state.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"session {name} did not hold its target:\n{output.read_text()}")
            time.sleep(0.05)  # poll period, not a synchronisation
        session = Session(proc, Path(json.loads(state.read_text())["work_dir"]), output)
        started.append(session)
        return session

    yield start
    for session in started:
        if session.proc.poll() is None:
            session.proc.kill()
        session.proc.wait()
    for leftover in (project.parent / "tmp").iterdir():
        subprocess.run(["rm", "-rf", "--one-file-system", str(leftover)], check=False)


def sigkill(session: Session) -> None:
    session.proc.send_signal(signal.SIGKILL)
    session.proc.wait()
    assert session.work_dir.is_dir(), "a SIGKILLed session cannot remove its own work dir"


def test_chaos_cleanup_removes_a_killed_sessions_work_dir_not_a_live_ones(project, hold):
    dead, live = hold("dead"), hold("live")
    sigkill(dead)

    done = subprocess.run(
        pytest_args(project, "--chaos-cleanup"),
        cwd=project,
        env=session_env(project),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert not dead.work_dir.exists(), done.stdout
    assert f"removed work dir {dead.work_dir} of dead session pid {dead.proc.pid}" in done.stdout
    assert live.work_dir.is_dir() and live.proc.poll() is None
    assert str(live.work_dir) not in done.stdout


def test_the_next_session_removes_a_killed_sessions_work_dir_not_a_live_ones(project, hold):
    dead, live = hold("dead"), hold("live")
    sigkill(dead)

    done = subprocess.run(
        pytest_args(project, "come_up.py"),
        cwd=project,
        env=session_env(project),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert not dead.work_dir.exists(), done.stdout
    assert live.work_dir.is_dir() and live.proc.poll() is None
    left = sorted(p.name for p in (project.parent / "tmp").iterdir())
    assert left == [live.work_dir.name], "the next session removed its own dir at its end"
