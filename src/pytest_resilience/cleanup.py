"""``pytest --chaos-cleanup``: revert whatever a killed run left injected, then exit."""

from __future__ import annotations

from .faults.base import FaultContext, revert_entries
from .run import ChaosRun

__all__ = ["cleanup"]


def cleanup(run: ChaosRun) -> int:
    entries = run.ledger.open_entries()
    write = print
    if not entries:
        write(f"chaos cleanup: nothing open in {run.settings.ledger}")
        return 0
    target = _target_for_cleanup(run)
    failed = 0
    for entry, outcome in revert_entries(entries, run.ledger, FaultContext(target=target)):
        write(f"chaos cleanup: ledger #{entry.id} {entry.kind} ({entry.description}): {outcome}")
        failed += outcome != "reverted"
    return 1 if failed else 0


def _target_for_cleanup(run: ChaosRun):
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
