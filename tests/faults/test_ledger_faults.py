"""The ledger-first discipline of every fault: write before acting, close after revert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_resilience import FaultError, Timeline
from pytest_resilience.errors import PrivilegeError
from pytest_resilience.faults.base import (
    Fault,
    FaultContext,
    FaultSession,
    register_reverter,
    revert_entries,
)
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED

WEB_SERVICES = Path(__file__).parents[1] / "local_services" / "web.yaml"
TARGET = types.SimpleNamespace(name="test")  # these faults act on files, not on a target


class FileFault(Fault):
    """A real, observable fault: a file that exists while the fault is active."""

    kind = "test_file"

    def __init__(self, path: Path, ledger: Ledger | None = None, *, fail: bool = False) -> None:
        self.path, self.ledger, self.fail = path, ledger, fail
        self.open_while_acting: list[int] = []

    def describe(self) -> str:
        return f"file {self.path}"

    def plan(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        if self.ledger is not None:
            self.open_while_acting = [
                e.id for e in self.ledger.open_entries(include_live_owners=True)
            ]
        self.path.write_text("injected")
        if self.fail:
            raise RuntimeError("half-way")
        return {"size": 8}

    def revert(self, ctx: FaultContext) -> None:
        self.path.unlink(missing_ok=True)


@register_reverter(FileFault.kind)
def _revert_file(spec: dict[str, Any], ctx: FaultContext) -> None:
    Path(spec["path"]).unlink(missing_ok=True)


def test_entry_is_written_before_the_fault_acts_and_closed_after_revert(
    tmp_path: Path, ledger: Ledger
) -> None:
    line = Timeline("t")
    session = FaultSession(TARGET, ledger=ledger, timeline=line)
    fault = FileFault(tmp_path / "f", ledger)
    handle = session.inject(fault)
    assert fault.open_while_acting == [handle.entry_id]
    assert (tmp_path / "f").exists()
    assert ledger.get(handle.entry_id).spec == {
        "path": str(tmp_path / "f"),
        "size": 8,
        # a fault class of this module, not the package's: where a cleanup finds its undo
        "origin": {"module": __name__, "file": __file__},
    }
    handle.revert()
    handle.revert()  # idempotent
    assert not (tmp_path / "f").exists()
    assert ledger.get(handle.entry_id).outcome == "reverted"
    assert [e.kind for e in line.events()] == [FAULT_INJECTED, FAULT_REVERTED]


def test_context_manager_reverts_on_exception(tmp_path: Path, ledger: Ledger) -> None:
    session = FaultSession(TARGET, ledger=ledger)
    with pytest.raises(ZeroDivisionError), session.inject(FileFault(tmp_path / "f")):
        assert (tmp_path / "f").exists()
        1 / 0  # noqa: B018
    assert not (tmp_path / "f").exists()
    assert ledger.open_entries(include_live_owners=True) == []


def test_half_done_inject_is_reverted_and_reported(tmp_path: Path, ledger: Ledger) -> None:
    session = FaultSession(TARGET, ledger=ledger)
    with pytest.raises(FaultError, match=r"could not inject test_file .*half-way"):
        session.inject(FileFault(tmp_path / "f", fail=True))
    assert not (tmp_path / "f").exists()
    assert ledger.open_entries(include_live_owners=True) == []


def test_revert_all_reverts_newest_first(tmp_path: Path, ledger: Ledger) -> None:
    session = FaultSession(TARGET, ledger=ledger)
    handles = [session.inject(FileFault(tmp_path / f"f{i}")) for i in range(3)]
    session.revert_all()
    assert not list(tmp_path.glob("f*"))
    reverted = sorted(handles, key=lambda h: h.reverted_at, reverse=True)
    assert [h.entry_id for h in reverted] == [h.entry_id for h in handles]


def test_dry_run_touches_nothing(tmp_path: Path, ledger: Ledger) -> None:
    line = Timeline("t")
    session = FaultSession(TARGET, ledger=ledger, timeline=line, dry_run=True)
    with session.inject(FileFault(tmp_path / "f")):
        assert not (tmp_path / "f").exists()
    assert ledger.open_entries(include_live_owners=True) == []
    assert all(e.detail.get("dry_run") for e in line.events())


def test_sigkilled_run_is_reverted_from_the_ledger_alone(tmp_path: Path, ledger: Ledger) -> None:
    victim = tmp_path / "left-behind"
    script = textwrap.dedent(
        f"""
        import os, signal, sys, types
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_ledger_faults import FileFault
        from pytest_resilience.faults.base import FaultSession
        from pytest_resilience.ledger import Ledger
        from pathlib import Path
        ledger = Ledger(Path({str(ledger.path)!r}))
        session = FaultSession(types.SimpleNamespace(name="test"), ledger=ledger)
        session.inject(FileFault(Path({str(victim)!r})))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert victim.exists()
    (entry,) = ledger.open_entries()
    assert entry.kind == "test_file" and not entry.owner_alive
    outcomes = revert_entries([entry], ledger, FaultContext(target=TARGET))
    assert [o for _, o in outcomes] == ["reverted"]
    assert not victim.exists()
    assert ledger.open_entries() == []


def test_entries_of_a_live_owner_are_not_stolen(tmp_path: Path, ledger: Ledger) -> None:
    other = Ledger(ledger.path, session="another-live-session")
    entry_id = other.open("test_file", target="test", description="x", spec={})
    assert ledger.open_entries() == []  # owner (this very pid) is alive
    assert [e.id for e in ledger.open_entries(include_live_owners=True)] == [entry_id]
    assert os.getpid() == other.get(entry_id).pid
    other.close_db()


class NotingFault(FileFault):
    """Learns its file name while acting, and names it in the ledger before creating it."""

    kind = "test_file"

    def plan(self) -> dict[str, Any]:
        return {}

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        self.note({"path": str(self.path)})
        assert self.ledger is not None
        (entry,) = self.ledger.open_entries(include_live_owners=True)
        self.spec_before_acting = entry.spec
        return super().inject(ctx)


def test_a_fault_names_what_it_learnt_in_the_ledger_before_acting(
    tmp_path: Path, ledger: Ledger
) -> None:
    fault = NotingFault(tmp_path / "learnt", ledger)
    FaultSession(TARGET, ledger=ledger).inject(fault).revert()
    assert fault.spec_before_acting == {
        "path": str(tmp_path / "learnt"),
        "origin": {"module": __name__, "file": __file__},
    }


# -- what no cleanup could settle (issue 10, items 3 and 11) ---------------------------------


def test_a_network_block_without_iptables_is_refused_and_leaves_no_entry(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The precondition fails before anything changes: nothing to revert (no FileNotFoundError
    # from a revert running `iptables`), and no open entry for every later session to trip on.
    bare = tmp_path / "bin"  # a PATH on which there is no iptables
    bare.mkdir()
    monkeypatch.setenv("PATH", str(bare))
    target = LocalTarget.from_file(WEB_SERVICES, work_dir=tmp_path / "work")  # not started
    session = FaultSession(target, ledger=ledger)
    with pytest.raises(PrivilegeError, match=r"needs the iptables binary") as info:
        session.inject(NetworkBlock("app=web"))
    assert info.value.__context__ is None  # nothing failed while handling it
    assert ledger.open_entries(include_live_owners=True) == []
    assert session.active == []
    session.revert_all()  # nothing left that a revert would try


LATENCY_KILLED_MID_INJECT = """
import os, signal, sys
from pathlib import Path
from pytest_resilience.faults.base import FaultSession
from pytest_resilience.faults.toxics import Latency
from pytest_resilience.ledger import Ledger

class Local:  # the moment of the kill: the fault asks its target for the Toxiproxy server
    name = "local"

    def toxiproxy_server(self):
        os.kill(os.getpid(), signal.SIGKILL)

    toxiproxy_url = property(toxiproxy_server)  # where faults asked before capabilities

FaultSession(Local(), ledger=Ledger(Path(sys.argv[1]))).inject(Latency("postgres", ms=300))
"""


def test_cleanup_closes_a_latency_killed_before_it_reached_toxiproxy(tmp_path: Path) -> None:
    ledger_path = tmp_path / "ledger.sqlite"
    killed = subprocess.run(
        [sys.executable, "-c", LATENCY_KILLED_MID_INJECT, str(ledger_path)],
        capture_output=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    (project := tmp_path / "project").mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    # The user's cleanup: the local target, not started, so no Toxiproxy server of its own.
    cleanup = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--chaos-cleanup",
            f"--chaos-ledger={ledger_path}",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = cleanup.stdout + cleanup.stderr
    assert cleanup.returncode == 0, out
    assert "latency (latency 300±0 ms downstream on proxy 'postgres'" in out, out
    assert "closed, nothing left to undo: it never acted" in out, out
    assert "Traceback" not in out, out
    ledger = Ledger(ledger_path)
    try:
        (entry,) = [ledger.get(1)]
        assert entry.closed_at is not None, entry
        assert entry.outcome.startswith("closed by cleanup: it never acted")  # type: ignore[union-attr]
        again = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "--chaos-cleanup",
                f"--chaos-ledger={ledger_path}",
            ],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0 and "nothing open" in again.stdout, again.stdout
    finally:
        ledger.close_db()
