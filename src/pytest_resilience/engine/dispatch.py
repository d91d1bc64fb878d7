"""The engine's dispatcher: each alert de-duplicated, inhibited, routed, admitted, launched.

One dispatcher thread takes alerts off a bounded queue and decides chunk by chunk, each
chunk's decisions in one store transaction, written before anything acts. An alert is a
duplicate of an open or escalated incident, held back while its cause is handled (the
playbooks' inhibit rules, :mod:`.inhibition`), suppressed by a cooldown, escalated (no
playbook, no target, refused by the safety caps), or opened as an incident and handed to
the :class:`~.remediation.Remediator` on the worker pool. :class:`Dispatch` is the
:class:`~.runner.Engine`'s base class; the engine builds the state declared here.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import cast

from .. import timeline as tl
from ..targets.base import Target
from .alerts import Alert, RuleEvaluator
from .escalation import Outbox
from .inhibition import Inhibitor
from .playbooks import Playbook
from .redaction import LOGGER
from .remediation import RemediationRun, Remediator
from .safety import Safety
from .store import ESCALATED, OPEN, RESOLVED, Incident, Store
from .targeting import Listing, NoTarget, find_target, retarget

__all__ = ["Dispatch"]


#: an alert to decide and its inbox id (None: not from the webhook, nothing to clear)
_Queued = tuple[Alert, int | None]
#: what the dispatcher's queue holds: one alert, a webhook body's alerts, or None (wake up)
_Item = _Queued | list[_Queued] | None


#: at most this many alerts decided per transaction: the engine's connection holds SQLite's
#: one write lock for one chunk at most, which is what an inbox write may wait for
_CHUNK = 64
#: alerts decided on one listing of the target (read once, only if an alias needs it)
_LISTED_FOR = 256


class Dispatch:
    """Decides alerts; the :class:`~.runner.Engine` is one and sets up what it declares."""

    target: Target
    timeline: tl.Timeline | None
    dry_run: bool
    playbooks: list[Playbook]
    store: Store
    safety: Safety
    outbox: Outbox
    rules: RuleEvaluator
    remediator: Remediator
    inhibitor: Inhibitor
    max_queue: int
    _routes: dict[str, Playbook]
    _located: dict[str, tuple[str, str]]
    _queue: queue.Queue[_Item]
    _waiting: int
    _lock: threading.Lock
    _open: dict[tuple[str, str], RemediationRun]
    _escalated: dict[tuple[str, str], str]
    _changed: threading.Condition
    _chunking: threading.local
    _busy: int
    _dry_in_chunk: list[RemediationRun]
    _closed_in_chunk: list[Alert]
    _stop: threading.Event
    _pool: ThreadPoolExecutor | None

    def _reserve(self, alerts: int, *, always: bool = False) -> bool:
        with self._lock:
            if not always and self._waiting + alerts > self.max_queue:
                return False
            self._waiting += alerts
        return True

    def idle(self) -> bool:
        """No alert waiting and no remediation running (for callers that poll)."""
        with self._lock:  # _waiting counts the alerts being written to the inbox too
            return self._waiting == 0 and self._queue.unfinished_tasks == 0 and self._busy == 0

    def wait_idle(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)  # polling with a deadline
        return True

    def _dispatch(self) -> None:
        backlog: deque[_Queued] = deque()  # taken off the queue, not decided yet
        listing, listed_for = Listing(self.target), 0
        while not self._stop.is_set():
            fresh = not backlog  # a new batch: a fresh look at the target for it
            batch: list[_Item] = [] if backlog else [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            for item in batch:
                if isinstance(item, list):
                    backlog.extend(item)
                elif item is not None:
                    backlog.append(item)
                self._queue.task_done()
            chunk = [backlog.popleft() for _ in range(min(_CHUNK, len(backlog)))]
            if fresh or listed_for >= _LISTED_FOR:
                listing, listed_for = Listing(self.target), 0
            if chunk:
                self._decide_chunk(chunk, listing)
                listed_for += len(chunk)
            with self._lock:
                self._waiting -= len(chunk)

    def _decide_chunk(self, chunk: list[_Queued], listing: Listing) -> None:
        """Decide ``chunk`` in one transaction: one commit per chunk, not one per alert."""
        # outside the store's transaction: finding a target may ask the platform's API
        located = [self._locate(alert, listing) for alert, _ in chunk]
        self._chunking.on = True
        try:
            with self.store.transaction():
                for alert, no_target in located:
                    try:
                        self._decide(alert, no_target)
                    except Exception:
                        LOGGER.exception("deciding on alert failed")
                runs, self._dry_in_chunk = self._dry_in_chunk, []
                for run in runs:
                    self._remediate(run, release=self._closed_in_chunk.append)
                # in the decisions' transaction: a kill leaves each alert decided or in
                # the inbox
                self.store.decided([inbox_id for _, inbox_id in chunk if inbox_id is not None])
        finally:
            self._chunking.on = False
            self._notify()
            closed, self._closed_in_chunk = self._closed_in_chunk, []
            for cause in closed:
                self._release_held(cause)

    def _known_as(self, alert_name: str) -> str:
        """The playbook's own name for an alert (an alias's ``as:``), else the name itself."""
        book = self._routes.get(alert_name)
        return book.known_as(alert_name) if book else alert_name

    def _locate(self, alert: Alert, listing: Listing | None = None) -> tuple[Alert, str | None]:
        """``alert`` about the target its labels name (aliases only), or why there is none."""
        book = self._routes.get(alert.name)
        alias = book.aliases.get(alert.name) if book else None
        if alias is None or not alias.target:
            return alert, None
        with self._lock:
            known = self._located.get(alert.fingerprint) if alert.fingerprint else None
        if known is not None:
            return replace(alert, target=known[1]), None
        try:
            found = find_target(alert, alias.target, self.target, listing=listing)
            return retarget(alert, found), None
        except Exception as exc:  # NoTarget, or a broken target: it must not lose the alert
            reason = str(exc) if isinstance(exc, NoTarget) else f"target look-up failed: {exc}"
            # the incident is about what the labels name, not the exporter that reported it
            named = next(
                (alert.labels[t.label] for t in alias.target if alert.labels.get(t.label)), ""
            )
            return replace(alert, target=named or alert.target), reason

    def _decide(self, alert: Alert, no_target: str | None = None) -> None:
        key = alert.key
        with self._lock:
            run = self._open.get(key)
            escalated = self._escalated.get(key)
        if not alert.firing:
            if self.inhibitor.unhold(key) is not None:
                self.store.add_alert(alert, "resolved while inhibited")
                return
            self._mark(tl.ALERT_RESOLVED, alert.name, target=alert.target)
            if run is not None:
                run.resolved.set()
                self.store.add_alert(alert, "resolved", run.incident.id)
            elif escalated is not None:
                self.store.add_alert(alert, "resolved", escalated)
                self._close_escalated(key, escalated)
            else:
                self.store.add_alert(alert, "resolved")
            return
        if run is not None or escalated is not None:
            self.store.add_alert(alert, "duplicate", run.incident.id if run else escalated)
            return
        cause = self.inhibitor.cause_of(alert)
        if cause is not None:
            self.inhibitor.hold(alert)
            self.store.add_alert(alert, f"inhibited: {cause}")
            LOGGER.info("%s on %s held back: %s", alert.name, alert.target, cause)
            return
        now = time.time()
        book = self._routes.get(alert.name)
        if book is None:
            incident = self._open_incident(alert, None, now)
            self.remediator.escalate(incident, f"no playbook handles alert {alert.name!r}")
            return
        if no_target is not None:
            # nothing was tried, so the page carries the alert's own severity, not the
            # playbook's "remediation failed" one
            incident = self._open_incident(alert, book, now, severity=alert.severity)
            self.store.note(incident.id, "no_target", f"{no_target}; nothing was done")
            self.remediator.escalate(incident, no_target)
            return
        decision = self.safety.admit(alert.name, alert.target, now)
        if not decision.allowed and decision.reason == "cooldown":
            self.store.add_alert(alert, "suppressed: cooldown")
            return
        incident = self._open_incident(alert, book, now)
        if not decision.allowed:
            self.remediator.escalate(incident, f"auto-remediation refused: {decision.reason}")
            return
        self.safety.begin(alert.name, alert.target, now)
        # a dry run touches nothing but the store: its whole trail goes into this chunk's
        # transaction, decided here, rather than a worker's transaction per incident
        self._launch(RemediationRun(incident), inline=self.dry_run)

    # Open and escalated incidents are the causes the inhibitor sees (call under _lock).

    def _set_open(self, run: RemediationRun) -> None:
        key = (run.incident.alert_name, run.incident.target)
        if key not in self._open:
            self.inhibitor.started(key, run.incident.alert)
        self._open[key] = run

    def _pop_open(self, key: tuple[str, str]) -> None:
        if self._open.pop(key, None) is not None:
            self.inhibitor.ended(key)

    def _set_escalated(self, incident: Incident) -> None:
        key = (incident.alert_name, incident.target)
        if key not in self._escalated:
            self.inhibitor.started(key, incident.alert)
        self._escalated[key] = incident.id

    def _pop_escalated(self, key: tuple[str, str]) -> None:
        if self._escalated.pop(key, None) is not None:
            self.inhibitor.ended(key)

    def _release_held(self, closed: Alert) -> None:
        """Decide the held alerts the incident about ``closed`` held back, if nothing else
        holds them now (still breaching ones; see :meth:`.inhibition.Inhibitor.released_by`)."""
        for alert in self.inhibitor.released_by(closed):
            # Held while its cause was handled: act only if it still breaches now,
            # not on the stale reading it was held with (the cause's fix may have fixed it).
            if self.rules.still_breached(alert):
                self._reserve(1, always=True)  # already taken: never refused
                self._queue.put_nowait((alert, None))
            else:
                self.store.add_alert(alert, "resolved while inhibited")

    def _open_incident(
        self, alert: Alert, book: Playbook | None, now: float, *, severity: str | None = None
    ) -> Incident:
        incident = Incident(
            id=f"inc-{uuid.uuid4().hex[:12]}",
            alert_name=alert.name,
            target=alert.target,
            fingerprint=alert.fingerprint,
            playbook=book.name if book else "",
            status=OPEN,
            step=0,
            severity=severity or (book.escalate_severity if book else alert.severity),
            summary=(book.escalate_summary if book and book.escalate_summary else "")
            or alert.annotations.get("summary", "")
            or f"{alert.name} on {alert.target}",
            reason="",
            alert=alert,
            follow_up=book.follow_up if book else (),
            dry_run=self.dry_run,
            opened_at=now,
            detected_at=alert.received_at,
            updated_at=now,
            closed_at=None,
        )
        self.store.open_incident(incident)
        self._remember_location(incident)
        self.store.add_alert(alert, "incident", incident.id)
        self.store.note(
            incident.id, "alert", f"{alert.name} firing on {alert.target} ({alert.source})"
        )
        self._mark(
            tl.ALERT_FIRED,
            alert.name,
            at=alert.received_at,
            target=alert.target,
            incident=incident.id,
            # "webhook" alerts are what Alertmanager delivered: say so on the timeline
            source="alertmanager" if alert.source == "webhook" else alert.source,
            severity=alert.severity,
            starts_at=alert.starts_at,
            value=alert.value,
        )
        return incident

    def _remember_location(self, incident: Incident) -> None:
        book = self._routes.get(incident.alert_name)
        if incident.fingerprint and book is not None and incident.alert_name in book.aliases:
            with self._lock:
                self._located[incident.fingerprint] = (incident.alert_name, incident.target)

    def _forget_location(self, key: tuple[str, str]) -> None:
        """The incident on ``key`` closed: its alert's next firing is looked up afresh."""
        with self._lock:
            for fingerprint in [f for f, k in self._located.items() if k == key]:
                del self._located[fingerprint]

    # -- remediation -------------------------------------------------------------------

    def _resume(self) -> None:
        interrupted = self.store.interrupt_running_actions()
        for incident in self.store.incidents(status=OPEN):
            self.store.note(
                incident.id,
                "resumed",
                f"engine restarted; resuming at step {incident.step + 1}"
                + (f" ({interrupted} interrupted action(s) marked)" if interrupted else ""),
            )
            self._remember_location(incident)
            if incident.playbook not in {b.name for b in self.playbooks}:
                self.remediator.escalate(
                    incident, f"playbook {incident.playbook!r} no longer loaded"
                )
                continue
            self._launch(RemediationRun(incident, resumed=True))
        for incident in self.store.incidents(status=ESCALATED):
            self._remember_location(incident)
            with self._lock:
                self._set_escalated(incident)
        for inbox_id, alert in self.store.inbox():  # taken (answered 200), not yet decided
            self._reserve(1, always=True)
            self._queue.put_nowait((alert, inbox_id))

    def _launch(self, run: RemediationRun, *, inline: bool = False) -> None:
        """Remediate ``run`` on the pool, or ``inline`` in the dispatcher's chunk."""
        with self._lock:
            self._set_open(run)
            self._busy += 1
        if inline:
            self._dry_in_chunk.append(run)  # run at the chunk's end (_decide_chunk)
            return
        assert self._pool is not None
        self._pool.submit(self._remediate, run)

    def _remediate(
        self, run: RemediationRun, *, release: Callable[[Alert], object] | None = None
    ) -> None:
        """Run ``run``'s playbook; ``release``: hand the held-alert release to the caller."""
        incident = run.incident
        keep_open = False
        try:
            # a dry run acts on nothing but the store (no action, no verify): its whole
            # trail is one transaction instead of a commit per line
            with self.store.transaction() if self.dry_run else contextlib.nullcontext():
                keep_open = self.remediator.run(run)
        finally:
            if not keep_open:
                with self._lock:
                    self._pop_open((incident.alert_name, incident.target))
                    escalated = (incident.alert_name, incident.target) in self._escalated
                if not escalated:
                    self._forget_location((incident.alert_name, incident.target))
                # before going idle: a released alert is queued work
                if release is not None:
                    release(incident.alert)
                else:
                    self._release_held(incident.alert)
            with self._lock:
                self._busy -= 1

    def _close_escalated(self, key: tuple[str, str], incident_id: str) -> None:
        """The alert resolved after a page: close the incident and resolve the page."""
        with self._lock:
            self._pop_escalated(key)
        self._forget_location(key)
        incident = self.store.incident(incident_id)
        self._release_held(incident.alert if incident is not None else Alert(*key))
        if incident is None:
            return
        self.remediator.close(
            incident, RESOLVED, f"{incident.reason}; alert resolved after escalation"
        )
        if not self.dry_run:  # nothing was paged, so there is nothing to resolve
            self.outbox.enqueue(self.store.incident(incident_id) or incident, "resolve")

    def _mark(self, kind: str, name: str, /, **detail: object) -> None:
        if self.timeline is not None:
            at = cast("float | None", detail.pop("at", None))  # a mark's time, if given
            self.timeline.mark(kind, name, at=at, **detail)
        if not getattr(self._chunking, "on", False):  # a chunk wakes the waiters once
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _on_escalated(self, incident: Incident) -> None:
        """The remediator escalated ``incident`` (in its transaction): it stays known here."""
        with self._lock:
            self._set_escalated(incident)
