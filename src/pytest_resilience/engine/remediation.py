"""Remediation steps of one incident: action -> verify -> resolve, next step, or escalate.

The :class:`~.runner.Engine` decides (its dispatcher, :mod:`.dispatch`) and hands each
incident it opens to a :class:`Remediator`, on a worker of its pool (a dry run: inline, in
the dispatcher's transaction). What the remediator must tell the engine back (an incident
escalated, a decision recorded) goes through the callbacks it was built with, so the
engine's own state (which incidents are open or escalated, the inhibitor) stays the
engine's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .. import timeline as tl
from ..targets.base import Target
from .actions import REGISTRY, ActionContext, AdminUrl
from .alerts import Probe, RuleEvaluator
from .escalation import Outbox
from .playbooks import Option, Playbook, Step
from .redaction import LOGGER
from .safety import Safety
from .store import DRY_RUN, ESCALATED, RESOLVED, WARNED, Incident, Store
from .verify import FIXED, INCONCLUSIVE, NOT_FIXED, Interrupted, VerifyResult, verify

__all__ = ["Mark", "RemediationRun", "Remediator"]


class Mark(Protocol):
    """Puts a mark on the scenario's timeline (if any) and wakes the engine's waiters."""

    def __call__(self, kind: str, name: str, /, **detail: object) -> None: ...


@dataclass
class RemediationRun:
    """An incident being remediated; ``resolved`` is set when its alert resolves."""

    incident: Incident
    resolved: threading.Event = field(default_factory=threading.Event)
    #: taken up again after a restart: a step whose action already ran is verified, not redone
    resumed: bool = False


class _Capped(Exception):
    pass


class Remediator:
    """Runs playbook steps for incidents; one instance per engine, shared by its workers."""

    def __init__(
        self,
        *,
        target: Target,
        playbooks: Sequence[Playbook],
        store: Store,
        safety: Safety,
        outbox: Outbox,
        rules: RuleEvaluator,
        probes: Mapping[str, Probe],
        admin_url: AdminUrl,
        dry_run: bool,
        stop: threading.Event,
        mark: Mark,
        escalated: Callable[[Incident], None],
        changed: Callable[[], None],
    ) -> None:
        """``escalated(incident)`` runs in the escalation's transaction, before its page is
        queued; ``changed()`` after an incident is closed (the engine wakes its waiters)."""
        self.target = target
        self.playbooks = playbooks
        self.store = store
        self.safety = safety
        self.outbox = outbox
        self.rules = rules
        self.probes = probes
        self.admin_url = admin_url
        self.dry_run = dry_run
        self._stop = stop
        self._mark = mark
        self._escalated = escalated
        self._changed = changed

    def run(self, run: RemediationRun) -> bool:
        """Run the playbook; True if the incident stays open (the engine stopped mid-way)."""
        incident = run.incident
        try:
            self._run_steps(run)
        except Interrupted:
            self.store.note(incident.id, "interrupted", "engine stopped mid-remediation")
            return True
        except _Capped as capped:
            self.escalate(incident, f"auto-remediation stopped: {capped}")
        except Exception as exc:
            LOGGER.exception("remediation of %s failed", incident.id)
            self.escalate(incident, f"engine error: {type(exc).__name__}: {exc}")
        return False

    def _run_steps(self, run: RemediationRun) -> None:
        incident = run.incident
        book = next(b for b in self.playbooks if b.name == incident.playbook)
        ctx = ActionContext(
            target=self.target,
            alert=incident.alert,
            incident_id=incident.id,
            probes=self.probes,
            admin_url=self.admin_url,
            stop=self._stop,
        )
        rule = self.rules.rule_for(incident.alert)
        done = {a.step for a in self.store.actions(incident.id)} if run.resumed else set()
        tried = bool(done)
        for index in range(incident.step, len(book.steps)):
            step = book.steps[index]
            self.store.update_incident(incident.id, step=index)
            option = step.choose(incident.alert, known_as=book.known_as(incident.alert_name))
            if option is None:
                self.store.note(incident.id, "skipped", f"step {step.name!r}: no option matches")
                continue
            spec = option.verify or step.verify
            tried = True
            if index in done:
                self.store.note(incident.id, "resumed", f"step {step.name!r} already acted: verify")
                acted = True
            else:
                acted = self._act(incident, book, index, option, ctx)
            if self.dry_run:
                self.close(incident, DRY_RUN, f"dry run: would have run step {step.name!r}")
                return
            if acted:
                started = time.time()
                result = verify(spec, ctx, rule=rule, resolved=run.resolved)
            else:
                started = time.time()
                result = VerifyResult(NOT_FIXED, "action", "action failed; not verified")
            self.store.add_verification(
                incident.id, index, result.condition, result.outcome, result.detail, started
            )
            self._mark(
                tl.VERIFIED,
                incident.alert_name,
                target=incident.target,
                incident=incident.id,
                action_id=ctx.state.get("last_action_id"),
                ok=result.outcome == FIXED,
                outcome=result.outcome,
                strategy=book.name,
                step=step.name,
                detail=result.detail,
            )
            policy = {
                FIXED: spec.on_fixed,
                NOT_FIXED: spec.on_not_fixed,
                INCONCLUSIVE: spec.on_inconclusive,
            }[result.outcome]
            if policy == "resolve":
                self.safety.record_outcome(True, time.time())
                self.close(incident, RESOLVED, f"{result.outcome} after step {step.name!r}")
                return
            if policy == "warn":
                self.close(incident, WARNED, f"warning: {result.condition}: {result.detail}")
                LOGGER.warning("%s on %s: %s", incident.alert_name, incident.target, result.detail)
                return
            if policy == "escalate":
                break
        if not tried:  # e.g. a warning-level alert the playbook acts on only when critical
            self.escalate(
                incident,
                f"no step of playbook {book.name!r} applies to this alert "
                f"(severity {incident.alert.severity!r}): nothing was done",
            )
            return
        reason = f"still failing after playbook {book.name!r}"
        self.escalate(incident, reason)
        if self.safety.record_outcome(False, time.time()):
            self.store.note(
                incident.id, "breaker", "circuit breaker opened: auto-remediation paused"
            )
            LOGGER.warning("circuit breaker opened after repeated failed remediations")

    def _act(
        self, incident: Incident, book: Playbook, index: int, option: Option, ctx: ActionContext
    ) -> bool:
        step: Step = book.steps[index]
        for call in option.actions:
            detail = dict(
                strategy=book.name, step=step.name, incident=incident.id, target=incident.target
            )
            # check the caps and record the action atomically: parallel incidents share them
            with self.store.transaction():
                decision = self.safety.allow_action(incident.target, time.time())
                if not decision.allowed:
                    raise _Capped(decision.reason)
                action_id = self.store.action_started(
                    incident.id, incident.target, index, book.name, call.name, call.params,
                    result="dry_run" if self.dry_run else "running",
                    detail=f"would have done: {call.describe()}" if self.dry_run else "",
                )  # fmt: skip
                detail["action_id"] = f"{incident.id}/{action_id}"
                self._mark(tl.ACTION_STARTED, call.name, dry_run=self.dry_run, **detail)
            ctx.state["last_action_id"] = detail["action_id"]
            if self.dry_run:
                self._mark(tl.ACTION_FINISHED, call.name, ok=False, dry_run=True, **detail)
                continue
            try:
                text = REGISTRY[call.name](ctx, **call.params) or ""
                result = "ok"
            except Exception as exc:
                if self._stop.is_set():
                    self.store.action_finished(action_id, "interrupted", "engine stopped")
                    raise Interrupted from None
                text, result = f"{type(exc).__name__}: {exc}", "failed"
            self.store.action_finished(action_id, result, text)
            ok = result == "ok"
            self._mark(
                tl.ACTION_FINISHED,
                call.name,
                ok=ok,
                result=text,
                error="" if ok else text,
                **detail,
            )
            if result != "ok":
                LOGGER.warning("action %s for %s failed: %s", call.name, incident.id, text)
                return False
        return True

    def close(self, incident: Incident, status: str, reason: str) -> None:
        with self.store.transaction():
            self.store.update_incident(
                incident.id, status=status, reason=reason, closed_at=time.time()
            )
            self.store.note(incident.id, status, reason)
        self._changed()

    def escalate(self, incident: Incident, reason: str) -> None:
        # A dry run decides and records the escalation but pages nobody: it is the engine
        # observing (a --remediation-baseline run, --dry-run serve), not on call.
        pages = bool(self.outbox.channels) and not self.dry_run
        with self.store.transaction():  # the incident escalated and its page queued, or neither
            self.store.update_incident(incident.id, status=ESCALATED, reason=reason)
            note = f"{reason}; dry run: nobody paged" if self.dry_run else reason
            self.store.note(incident.id, "escalated", note)
            self._escalated(incident)
            if pages:  # the page carries the incident as stored
                self.outbox.enqueue(self.store.incident(incident.id) or incident, "trigger")
        self._mark(
            tl.ESCALATED,
            incident.alert_name,
            target=incident.target,
            incident=incident.id,
            reason=reason,
            paged=pages,
            **({"dry_run": True} if self.dry_run else {}),
        )
