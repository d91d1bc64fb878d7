"""A SIGKILL at any moment of any fault leaves nothing ``--chaos-cleanup`` cannot settle.

A child process starts the local target on the fault test services and injects one fault
through a FaultSession with a real ledger; it SIGKILLs itself just before or just after the
ledger's n-th spec write, for every n the fault makes (the moments between which a fault
acts: record ahead, act, record what it learnt). Then a cleanup with a target that was never
started (what ``pytest --chaos-cleanup`` builds) must close every entry, reverted or proven
gone, and the system must hold nothing of the fault: no iptables chain, no fill file, no
memory helper, no stopped pod process (issue 10, item 11).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from pytest_resilience.faults.base import FaultContext, is_settled, ledger_ref, revert_entries
from pytest_resilience.ledger import Ledger, LedgerEntry
from pytest_resilience.targets.local import LocalTarget
from pytest_resilience.targets.local.memory import is_hog

SERVICES = Path(__file__).parents[1] / "local_services" / "faults.yaml"
RUN_TIMEOUT_S = 120.0  # a target start and one fault on a busy 2-core machine

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="iptables chains, tmpfs volumes and memory cgroups need root",
)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pytest_resilience.faults.base import FaultSession
    from pytest_resilience.faults.disk import DiskFill
    from pytest_resilience.faults.memory import MemoryStress
    from pytest_resilience.faults.network import NetworkBlock
    from pytest_resilience.faults.node import NodeFailure
    from pytest_resilience.faults.toxics import Latency, ProxyDown
    from pytest_resilience.ledger import Ledger
    from pytest_resilience.targets.local import LocalTarget

    services, work, ledger_path, fault, kill_at, when = sys.argv[1:]
    writes = 0
    write = Ledger.update_spec

    def update_spec(self, entry_id, spec):
        global writes
        writes += 1
        if writes == int(kill_at) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        write(self, entry_id, spec)
        if writes == int(kill_at) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    Ledger.update_spec = update_spec
    with LocalTarget.from_file(services, work_dir=Path(work)) as target:
        session = FaultSession(target, ledger=Ledger(Path(ledger_path)))
        session.inject(eval(fault))
        print("not killed after", writes, "writes", flush=True)
        session.revert_all()
    """
)

FAULTS = {
    "network_block": 'NetworkBlock("app=web", direction="both", action="reject")',
    "disk_fill": 'DiskFill("db", percent=90)',
    "memory_stress": 'MemoryStress("web", share=0.5)',
    "node_failure": 'NodeFailure("node-a")',
    "latency": 'Latency("db", ms=300)',
    "proxy_down": 'ProxyDown("db")',
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_sigkill_at_any_moment_leaves_nothing_cleanup_cannot_settle(
    tmp_path: Path, kind: str
) -> None:
    services = tmp_path / "services.yaml"
    services.write_text(SERVICES.read_text().replace("@HERE@", str(SERVICES.parent)))
    moments = 0
    for kill_at in range(1, 10):
        for when in ("before", "after"):
            run = tmp_path / f"{kill_at}-{when}"
            run.mkdir()
            ledger_path = run / "ledger.sqlite"
            child = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(services),
                    str(run / "work"),
                    str(ledger_path),
                    FAULTS[kind],
                    str(kill_at),
                    when,
                ],
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
            if child.returncode == 0:  # the fault made fewer writes: every moment was seen
                assert "not killed after" in child.stdout, child.stdout + child.stderr
                assert moments >= 2, f"{kind}: only {moments} moments to kill at"
                return
            assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
            moments += 1
            _settle_and_check(services, run, ledger_path, kind, f"{when} write {kill_at}")
    pytest.fail(f"{kind}: still writing its ledger entry after 9 writes")


def _settle_and_check(services: Path, run: Path, ledger_path: Path, kind: str, moment: str) -> None:
    ledger = Ledger(ledger_path)
    try:
        entries = ledger.open_entries()
        assert [e.kind for e in entries] == [kind], (moment, entries)
        (entry,) = entries
        cleanup_target = LocalTarget.from_file(services, work_dir=run / "cleanup")
        outcomes = revert_entries(entries, ledger, FaultContext(target=cleanup_target))
        assert all(is_settled(o) for _, o in outcomes), (moment, outcomes)
        assert ledger.open_entries(include_live_owners=True) == [], moment
        _assert_nothing_left(entry, moment)
    finally:
        ledger.close_db()


def _assert_nothing_left(entry: LedgerEntry, moment: str) -> None:
    spec = entry.spec
    if "chain" in spec:
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        assert spec["chain"] not in rules, (moment, rules)
    tag = ledger_ref(entry.session, entry.id)
    hogs = [p.pid for p in psutil.process_iter() if is_hog(p, tag)]
    assert hogs == [], (moment, hogs)
    for record in spec.get("records", []):
        detail = record["detail"]
        if "file" in detail:
            assert not Path(detail["file"]).exists(), (moment, detail)
        for pid in detail.get("pids", []):
            try:
                status = psutil.Process(pid).status()
            except psutil.NoSuchProcess:
                continue
            assert status != psutil.STATUS_STOPPED, (moment, pid)
