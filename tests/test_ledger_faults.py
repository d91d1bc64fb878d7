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
from pytest_resilience.faults.base import (
    Fault,
    FaultContext,
    FaultSession,
    register_reverter,
    revert_entries,
)
from pytest_resilience.ledger import Ledger
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED

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


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    yield ledger
    ledger.close_db()


def test_entry_is_written_before_the_fault_acts_and_closed_after_revert(
    tmp_path: Path, ledger: Ledger
) -> None:
    line = Timeline("t")
    session = FaultSession(TARGET, ledger=ledger, timeline=line)
    fault = FileFault(tmp_path / "f", ledger)
    handle = session.inject(fault)
    assert fault.open_while_acting == [handle.entry_id]
    assert (tmp_path / "f").exists()
    assert ledger.get(handle.entry_id).spec == {"path": str(tmp_path / "f"), "size": 8}
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
    assert fault.spec_before_acting == {"path": str(tmp_path / "learnt")}
