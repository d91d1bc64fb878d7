"""``--chaos-cleanup`` settles faults that are not the package's own (issue 10, item 11).

A scenario's or user's :class:`~pytest_resilience.faults.base.Fault` used to leave "no
reverter registered for kind 'connection_leak': left open" after a SIGKILL, for every later
session. Now its ledger entry names the module that defined it, the cleanup imports that
module, and the class's ``undo_from_spec`` undoes it, or closes it with the proof that the
processes holding its state are gone (``faults/proof.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_resilience.faults.base import FaultContext, FaultSession, is_settled, revert_entries
from pytest_resilience.ledger import Ledger
from pytest_resilience.probes import BuiltinProbes
from pytest_resilience.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "scenarios"
FAULTS_SERVICES = Path(__file__).parents[1] / "local_services" / "faults.yaml"
DEMO_SERVICES = REPO / "src" / "pytest_resilience" / "demo" / "services.yaml"

USER_FAULTS = textwrap.dedent(
    '''
    from pathlib import Path
    from pytest_resilience.faults.base import Fault

    class _Marker(Fault):
        """Writes a marker file: what a fault of the user's own changes on the system."""

        def __init__(self, path):
            self.path = Path(path)

        def describe(self):
            return f"marker {self.path}"

        def inject(self, ctx):
            self.note({"path": str(self.path)})
            self.path.write_text("injected")
            return {"path": str(self.path)}

        def revert(self, ctx):
            self.path.unlink(missing_ok=True)

    class MarkerFault(_Marker):
        kind = "marker"

        @classmethod
        def undo_from_spec(cls, spec, ctx):
            Path(spec["path"]).unlink(missing_ok=True)
            return None

    class Unrevertable(_Marker):
        kind = "unrevertable"
    '''
)

#: injects through a real ledger, then SIGKILLs itself with the fault in place
CHILD = textwrap.dedent(
    """
    import importlib.util, os, signal, sys
    from pathlib import Path
    from pytest_resilience.faults.base import FaultSession
    from pytest_resilience.ledger import Ledger
    from pytest_resilience.targets.local import LocalTarget

    module_path, services, work, ledger_path, start, faults = sys.argv[1:]
    sys.path.insert(0, str(Path(module_path).parent))
    module = __import__(Path(module_path).stem)
    target = LocalTarget.from_file(services, work_dir=Path(work))
    if start == "start":
        target.start()
    session = FaultSession(target, ledger=Ledger(Path(ledger_path)))
    for fault in eval(faults):
        session.inject(fault)
    print("injected", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _run_killed(
    module: Path, services: Path, work: Path, ledger: Path, faults: str, *, start: bool = False
) -> None:
    """``faults`` is a Python list of the module's faults; ``start``: the target's services."""
    argv = [str(module), str(services), str(work), str(ledger), "start" if start else "", faults]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert "injected" in child.stdout


def _cleanup(project: Path, ledger: Path) -> subprocess.CompletedProcess[str]:
    """``pytest --chaos-cleanup`` as a user runs it, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--chaos-cleanup", "--chaos-ledger", str(ledger)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_cleanup_imports_the_users_fault_module_and_undoes_it(tmp_path: Path) -> None:
    module = tmp_path / "user_faults.py"
    module.write_text(USER_FAULTS)
    marker, ledger = tmp_path / "marker", tmp_path / "ledger.sqlite"
    faults = f"[module.MarkerFault({str(marker)!r})]"
    _run_killed(module, FAULTS_SERVICES, tmp_path / "work", ledger, faults)
    assert marker.read_text() == "injected"

    done = _cleanup(tmp_path, ledger)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "marker (marker" in done.stdout and ": reverted" in done.stdout, done.stdout
    assert not marker.exists()
    assert Ledger(ledger).open_entries(include_live_owners=True) == []


def test_a_fault_class_without_undo_from_spec_is_named_and_stays_open(tmp_path: Path) -> None:
    module = tmp_path / "user_faults.py"
    module.write_text(USER_FAULTS)
    marker, ledger = tmp_path / "marker", tmp_path / "ledger.sqlite"
    faults = f"[module.Unrevertable({str(marker)!r})]"
    _run_killed(module, FAULTS_SERVICES, tmp_path / "work", ledger, faults)

    done = _cleanup(tmp_path, ledger)

    assert done.returncode == 1
    assert "no reverter for kind 'unrevertable'" in done.stdout, done.stdout
    assert "its Fault class in user_faults defines no undo_from_spec" in done.stdout
    assert [e.kind for e in Ledger(ledger).open_entries()] == ["unrevertable"]


def test_a_sigkill_mid_remediation_faults_leaves_nothing_cleanup_cannot_settle(
    tmp_path: Path,
) -> None:
    """The four faults of the remediation scenarios, each in place when the run dies."""
    ledger = tmp_path / "ledger.sqlite"
    faults = (
        "[module.CacheCrowdOut('redis'), module.ConnectionLeak('api'),"
        " module.MemoryHog('api', share=0.5), module.CrashLoop('api', deaths=3)]"
    )
    module = SCENARIOS / "remediation_faults.py"
    _run_killed(module, DEMO_SERVICES, tmp_path / "work", ledger, faults, start=True)

    done = _cleanup(tmp_path, ledger)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if "ledger #" in line]
    assert len(lines) == 4, done.stdout
    for kind, proof in [
        ("cache_crowd_out", "(pid "),
        ("connection_leak", "(pid "),
        ("memory_hog", "(pid "),
        ("crash_loop", "the test session that drove it"),
    ]:
        (line,) = [line for line in lines if f" {kind} (" in line]
        assert "closed, nothing left to undo:" in line and proof in line and "is gone" in line, line
    assert Ledger(ledger).open_entries(include_live_owners=True) == []


# -- the pods still run (a cluster's pods outlive the runner): undone through their hooks ---


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    sys.path.insert(0, str(SCENARIOS))
    target = LocalTarget.from_file(DEMO_SERVICES, work_dir=tmp_path_factory.mktemp("demo"))
    target.start()
    yield target
    target.close()
    sys.path.remove(str(SCENARIOS))


def _settle_live(target: LocalTarget, ledger: Ledger) -> list[tuple[Any, str]]:
    """What a cleanup does, with the pods still running and reachable."""
    entries = ledger.open_entries(include_live_owners=True)
    return revert_entries(entries, ledger, FaultContext(target=target))


def _in_use(target: LocalTarget) -> dict[str, float]:
    scrapes = BuiltinProbes(target, None, "api", max_age_s=0).scrape()
    return {pod: s.get("demo_db_pool_in_use") or 0.0 for pod, s in scrapes.items()}


def test_live_pods_get_their_connections_and_memory_back(demo: LocalTarget, tmp_path: Path) -> None:
    from remediation_faults import ConnectionLeak, MemoryHog, admin

    ledger = Ledger(tmp_path / "ledger.sqlite")
    session = FaultSession(demo, ledger=ledger)
    session.inject(ConnectionLeak("api"))
    hog = session.inject(MemoryHog("api", share=0.5))
    assert all(v > 0 for v in _in_use(demo).values()), _in_use(demo)

    outcomes = _settle_live(demo, ledger)

    assert [o for _, o in outcomes] == ["reverted", "reverted"], outcomes
    assert all(is_settled(o) for _, o in outcomes)
    assert set(_in_use(demo).values()) == {0.0}, _in_use(demo)
    released = admin(demo, hog.spec["pod"], "/admin/memory/release")
    assert released["released_mb"] == 0, released  # the cleanup already gave it back
    session.revert_all()  # the session's own revert after a cleanup's: a no-op


def test_live_redis_gets_its_config_back_and_the_stale_keys_go(
    demo: LocalTarget, tmp_path: Path
) -> None:
    from remediation_faults import STALE_PREFIX, CacheCrowdOut, RedisCommands

    redis = RedisCommands(demo, "redis")
    before = {name: redis.config(name) for name in ("maxmemory", "maxmemory-policy")}
    ledger = Ledger(tmp_path / "ledger.sqlite")
    session = FaultSession(demo, ledger=ledger)
    session.inject(CacheCrowdOut("redis"))
    assert redis.config("maxmemory-policy") == "volatile-lru"

    outcomes = _settle_live(demo, ledger)

    assert [o for _, o in outcomes] == ["reverted"], outcomes
    assert {name: redis.config(name) for name in before} == before
    assert redis.call("EVAL", "return #redis.call('KEYS', ARGV[1])", 0, f"{STALE_PREFIX}*") == "0"
    session.revert_all()
