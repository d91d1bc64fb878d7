"""State of one chaos run (a pytest session): settings, ledger, target, results.

One object the plugin keeps in ``config.stash``, so fixtures and hooks share it without
module globals, and a run's leftovers (open ledger entries) are settled in one place
before the first fault of the session acts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .faults.base import FaultContext, revert_entries
from .ledger import Ledger
from .report.model import ScenarioResult
from .settings import ChaosSettings
from .targets.base import Target

__all__ = ["ChaosRun"]

log = logging.getLogger("pytest_resilience")


@dataclass
class ChaosRun:
    settings: ChaosSettings
    results: list[ScenarioResult] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    #: which SLO probes ran: "built-in" (load stats) or "prometheus"
    probe_path: str = "built-in"
    #: which Toxiproxy served latency faults: "external", "binary", "embedded" or None
    toxiproxy_kind: str | None = None
    _ledger: Ledger | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(self.settings.ledger)
        return self._ledger

    def open_target(self, work_dir: Path) -> Target:
        """Start the target this run was asked for (``--chaos-target``)."""
        if self.settings.target == "kubernetes":
            from .targets.kubernetes import KubernetesTarget

            kube = KubernetesTarget(
                context=self.settings.kube_context,
                namespace=self.settings.namespace,
                allow=self.settings.allow,
                dry_run=self.settings.dry_run,
            )
            # In a cluster, Toxiproxy runs as a Deployment reached via --toxiproxy-url.
            kube.toxiproxy_url = self.settings.toxiproxy_url
            self.toxiproxy_kind = "external" if self.settings.toxiproxy_url else None
            return kube
        from .targets.local import LocalTarget

        target = LocalTarget.from_file(
            self.settings.services, work_dir=work_dir, toxiproxy_url=self.settings.toxiproxy_url
        )
        try:
            target.start()
        except BaseException:
            target.close()
            raise
        self.toxiproxy_kind = target.toxiproxy_kind
        return target

    def settle_leftovers(self, target: Target) -> list[str]:
        """Revert what an earlier, killed run left injected; say so in the summary."""
        entries = self.ledger.open_entries()
        if not entries:
            return []
        lines = [
            f"ledger #{e.id} {e.kind} ({e.description}) left open by pid {e.pid}: {outcome}"
            for e, outcome in revert_entries(
                entries, self.ledger, FaultContext(target=target, dry_run=False)
            )
        ]
        for line in lines:
            log.warning(line)
        self.notices.extend(lines)
        return lines

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close_db()
            self._ledger = None
