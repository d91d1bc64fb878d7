"""What the engine did, read back: results, waiting for a decision, scenario assertions.

:class:`Inspection` is the reading side of the :class:`~.runner.Engine` (its base class):
everything here reads the store and the loaded playbooks, nothing decides or acts. Chaos
scenarios wait on it (``wait_for_action``, ``wait_settled``) and assert with it
(``assert_strategy_ran``, ``assert_no_page``); the report and the post-incident review read
its results. Plain AssertionError, no pytest: the engine stays importable without it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .playbooks import Playbook
from .postmortem import Postmortem, build_postmortem
from .store import ESCALATED, ActionRecord, Incident, OutboxItem, Store

__all__ = ["Inspection", "StrategyRun"]


@dataclass(frozen=True)
class StrategyRun:
    """One playbook step as it ran for an incident (derived from the action log)."""

    incident_id: str
    alert: str
    target: str
    strategy: str
    step: str
    actions: tuple[str, ...]
    ok: bool
    outcome: str  # fixed | not_fixed | inconclusive | dry_run | action_failed | running


class Inspection:
    """The engine's results and the waits and assertions of chaos scenarios over them."""

    #: set by the engine
    store: Store
    playbooks: list[Playbook]
    #: notified on each decision the engine records (see :meth:`_wait`)
    _changed: threading.Condition

    def idle(self) -> bool:
        """No alert waiting and no remediation running (the engine's own answer)."""
        raise NotImplementedError

    # -- results -----------------------------------------------------------------------

    def incidents(self) -> list[Incident]:
        return self.store.incidents()

    def actions(self) -> list[ActionRecord]:
        return self.store.actions()

    def strategies_run(self) -> list[StrategyRun]:
        incidents = {i.id: i for i in self.store.incidents()}
        books = {b.name: b for b in self.playbooks}
        runs: list[StrategyRun] = []
        grouped: dict[tuple[str, int], list[ActionRecord]] = {}
        for record in self.store.actions():
            grouped.setdefault((record.incident_id, record.step), []).append(record)
        for (incident_id, index), records in grouped.items():
            incident = incidents[incident_id]
            verdicts = [v for v in self.store.verifications(incident_id) if v.step == index]
            results = {r.result for r in records}
            if "dry_run" in results:
                outcome = "dry_run"
            elif results & {"failed", "interrupted"}:
                outcome = "action_failed"
            else:
                outcome = verdicts[-1].outcome if verdicts else "running"
            book = books.get(records[0].strategy)
            runs.append(
                StrategyRun(
                    incident_id=incident_id,
                    alert=incident.alert_name,
                    target=incident.target,
                    strategy=records[0].strategy,
                    step=book.steps[index].name if book and index < len(book.steps) else str(index),
                    actions=tuple(r.action for r in records),
                    ok=results == {"ok"},
                    outcome=outcome,
                )
            )
        return runs

    def pages_sent(self) -> list[OutboxItem]:
        """Escalations delivered (trigger events accepted by their channel)."""
        return [i for i in self.store.outbox(status="delivered") if i.event_action == "trigger"]

    def postmortem(self, incident_id: str) -> Postmortem:
        return build_postmortem(self.store, incident_id)

    # -- waiting and asserting (chaos scenarios) -----------------------------------------

    def _wait(self, found: Callable[[], object], timeout: float) -> bool:
        """Wait until ``found()`` is truthy, woken by each decision the engine records.

        ``found`` reads the store, so it runs outside any lock the engine's threads take
        while marking (the timeline's condition among them): no lock-order inversion.
        """
        deadline = time.monotonic() + timeout
        while not found():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                self._changed.wait(min(remaining, 0.2))  # capped: a missed wake-up costs 0.2 s
        return True

    def wait_for_action(
        self, strategy: str, *, action: str | None = None, timeout: float = 30.0
    ) -> ActionRecord:
        """The first finished action of playbook ``strategy`` (and ``action``, if given)."""

        def find() -> ActionRecord | None:
            return next(
                (
                    a
                    for a in self.store.actions()
                    if a.strategy == strategy
                    and (action is None or a.action == action)
                    and a.result != "running"
                ),
                None,
            )

        if not self._wait(find, timeout):
            what = f"{strategy!r}" + (f" action {action!r}" if action else "")
            raise AssertionError(f"the engine ran no {what} within {timeout:g} s; {self._trail()}")
        found = find()
        assert found is not None
        return found

    def wait_settled(self, *, timeout: float = 60.0) -> list[Incident]:
        """Wait until at least one incident exists and none is open; return them all."""

        def settled() -> bool:
            incidents = self.store.incidents()
            # idle too: a symptom alert released as its cause closed is queued work
            return bool(incidents) and not any(i.open for i in incidents) and self.idle()

        if not self._wait(settled, timeout):
            raise AssertionError(
                f"incidents still open (or none opened) after {timeout:g} s; {self._trail()}"
            )
        return self.store.incidents()

    def assert_strategy_ran(
        self,
        name: str,
        *,
        actions: Sequence[str] | None = None,
        outcome: str | None = "fixed",
    ) -> StrategyRun:
        """A step of playbook ``name`` ran (those ``actions``, ending ``outcome``); returns it.

        ``outcome=None`` accepts any outcome. Several matching steps: the last one counts,
        so "GC did not help, scale-up did" is asserted as the scale-up step.
        """
        runs = [
            r
            for r in self.strategies_run()
            if r.strategy == name and (actions is None or list(r.actions) == list(actions))
        ]
        if not runs:
            raise AssertionError(
                f"strategy {name!r}"
                + (f" with actions {list(actions)}" if actions is not None else "")
                + f" did not run; {self._trail()}"
            )
        run = runs[-1]
        if outcome is not None and run.outcome != outcome:
            raise AssertionError(
                f"strategy {name!r} step {run.step!r} ended {run.outcome!r}, expected "
                f"{outcome!r}; {self._trail()}"
            )
        return run

    def assert_no_page(self) -> None:
        """Nobody was paged: no escalation queued, let alone delivered."""
        escalated = [i for i in self.store.incidents() if i.status == ESCALATED]
        queued = [o for o in self.store.outbox() if o.event_action == "trigger"]
        if escalated or queued:
            reasons = "; ".join(f"{i.alert_name} on {i.target}: {i.reason}" for i in escalated)
            raise AssertionError(
                f"{len(queued)} page(s) queued, {len(escalated)} incident(s) escalated: "
                f"{reasons or 'see the outbox'}"
            )

    def _trail(self) -> str:
        """What happened so far, for assertion messages."""
        incidents = self.store.incidents()
        if not incidents:
            return "no incident was opened (no alert fired)"
        parts = []
        for incident in incidents:
            acts = ", ".join(f"{a.action}={a.result}" for a in self.store.actions(incident.id))
            parts.append(
                f"{incident.alert_name} on {incident.target}: {incident.status}"
                + (f" ({incident.reason})" if incident.reason else "")
                + (f" [{acts}]" if acts else "")
            )
        return "incidents: " + "; ".join(parts)
