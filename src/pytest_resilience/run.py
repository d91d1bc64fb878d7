"""State of one chaos run (a pytest session): settings, ledger, target, results.

One object the plugin keeps in ``config.stash``, so fixtures and hooks share it without
module globals, and a run's leftovers (open ledger entries) are settled in one place
before the first fault of the session acts.

Every pytest session builds one, chaos or not, so this module imports only the settings at
load: the ledger, the work dirs (psutil), the report model and the fault machinery come in
with the first use (``benchmarks/bench_collect.py`` measures what a plain suite pays).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .settings import ChaosSettings

if TYPE_CHECKING:
    from .ledger import Ledger
    from .monitoring import Monitoring
    from .report.model import ScenarioResult
    from .targets.base import Target

__all__ = ["ChaosRun"]

log = logging.getLogger("pytest_resilience")


@dataclass
class ChaosRun:
    settings: ChaosSettings
    results: list[ScenarioResult] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    #: chaos items set up and not yet reported (by nodeid): what an interrupt leaves
    running: dict[str, Any] = field(default_factory=dict)
    #: which SLO probes ran: "built-in" (load stats) or "prometheus" (see monitoring.py)
    probe_path: str = "built-in"
    #: which Toxiproxy served latency faults: "external", "binary", "embedded" or None
    toxiproxy_kind: str | None = None
    _ledger: Ledger | None = None
    _monitoring: Monitoring | None = None
    _monitoring_error: Exception | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from .ledger import Ledger

            self._ledger = Ledger(self.settings.ledger)
        return self._ledger

    def make_work_dir(self) -> Path:
        """This session's work dir, once the dirs of dead (SIGKILLed) sessions are gone."""
        from .workdirs import make_work_dir, sweep_dead_work_dirs

        for swept in sweep_dead_work_dirs():
            line = f"removed work dir {swept.path} of dead session pid {swept.pid}"
            log.warning(line)
            self.notices.append(line)
        return make_work_dir()

    def open_target(self, work_dir: Path) -> Target:
        """Start the target this run was asked for (``--chaos-target``)."""
        if self.settings.target == "kubernetes":
            from .targets.kubernetes import KubernetesTarget

            kube = KubernetesTarget(
                context=self.settings.kube_context,
                namespace=self.settings.namespace,
                allow=self.settings.allow,
                dry_run=self.settings.dry_run,
                sigkill_by_exec=self.settings.sigkill_by_exec,
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

    def monitoring(self, target: Target) -> Monitoring:
        """This session's monitoring, started on first use (Prometheus + Alertmanager when
        installed, or ``--prometheus-url``); ``probe_path`` and a notice say which."""
        if self._monitoring_error is not None:
            raise self._monitoring_error  # fail every user of it fast, not one timeout each
        if self._monitoring is None:
            from .errors import ResilienceError
            from .monitoring import open_monitoring

            try:
                monitoring = open_monitoring(
                    target,
                    prometheus_url=self.settings.prometheus_url,
                    local=self.settings.target == "local",
                )
            except ResilienceError as exc:
                self._monitoring_error = exc
                raise
            self._monitoring = monitoring
            self.probe_path = monitoring.probe_path
            self.notices.append(monitoring.describe())
        return self._monitoring

    def close_monitoring(self) -> None:
        if self._monitoring is not None:
            self._monitoring.close()
            self._monitoring = None

    def settle_leftovers(self, target: Target) -> list[str]:
        """Revert what an earlier, killed run left injected; say so in the summary."""
        entries = self.ledger.open_entries()
        if not entries:
            return []
        from .faults.base import FaultContext, revert_entries

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
        self.close_monitoring()
        if self._ledger is not None:
            self._ledger.close_db()
            self._ledger = None
