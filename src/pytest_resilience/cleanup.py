"""``pytest --chaos-cleanup``: revert whatever a killed run left injected, remove the work
dirs of dead sessions, then exit."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ResilienceError
from .faults.base import FaultContext, is_settled, ledger_ref, revert_entries
from .run import ChaosRun
from .workdirs import sweep_dead_work_dirs

if TYPE_CHECKING:
    from .targets.base import Target
    from .targets.kubernetes import KubernetesTarget

__all__ = ["cleanup"]


def cleanup(run: ChaosRun) -> int:
    write = print
    for swept in sweep_dead_work_dirs():
        write(f"chaos cleanup: removed work dir {swept.path} of dead session pid {swept.pid}")
    entries = run.ledger.open_entries()
    # On kubernetes the cluster itself says what is still injected (annotations), so a
    # cleanup runs even with an empty ledger: the fault may come from another machine.
    kube = run.settings.target == "kubernetes"
    if not entries:
        write(f"chaos cleanup: nothing open in {run.settings.ledger}")
        if not kube:
            return 0
    try:
        target = _target_for_cleanup(run)
    except ResilienceError as exc:
        write(f"chaos cleanup: cannot open the {run.settings.target} target: {exc}")
        return 1
    failed = 0
    try:
        for entry, outcome in revert_entries(entries, run.ledger, FaultContext(target=target)):
            write(
                f"chaos cleanup: ledger #{entry.id} {entry.kind} ({entry.description}): {outcome}"
            )
            failed += not is_settled(outcome)
        if kube:
            from .targets.kubernetes import KubernetesTarget  # loaded already: it is the target

            assert isinstance(target, KubernetesTarget)
            failed += _undo_marked_elsewhere(run, target, write)
    finally:
        if kube:
            target.close()
    return 1 if failed else 0


def _undo_marked_elsewhere(
    run: ChaosRun, target: KubernetesTarget, write: Callable[[str], object]
) -> int:
    """Undo every change annotated on the cluster whose ledger entry is not open here.

    Those come from a run whose ledger is on another machine (a lost CI runner) or gone.
    Entries open in this ledger are left alone, whether their run still goes on or their
    revert just failed above (already reported). Returns the number of failed undos.
    """
    held = {ledger_ref(e.session, e.id) for e in run.ledger.open_entries(include_live_owners=True)}
    failed = 0
    for record in target.find_marked():
        where = ", ".join(
            f"{o.kind.lower()} {o.namespace + '/' if o.namespace else ''}{o.name}"
            for o in record.objects
        )
        what = f"chaos cleanup: {record.kind} on {where} (ledger id {record.ledger_id})"
        if record.ledger_id in held:
            write(f"{what}: left, its entry is open in {run.settings.ledger}")
            continue
        try:
            target.undo(record)
        except ResilienceError as exc:
            write(f"{what}: revert failed: {exc}")
            failed += 1
            continue
        write(f"{what}: reverted (marked on the cluster, not in this ledger)")
    return failed


def _target_for_cleanup(run: ChaosRun) -> Target:
    """A target that can answer reverters without starting any service."""
    if run.settings.target == "kubernetes":
        from .targets.kubernetes import KubernetesTarget

        return KubernetesTarget(
            context=run.settings.kube_context,
            namespace=run.settings.namespace,
            allow=run.settings.allow,
        )
    from .targets.local import LocalTarget

    return LocalTarget.from_file(run.settings.services, work_dir=run.settings.ledger.parent)
