"""The Engine: alert in -> playbook step -> action(s) -> verify -> resolve or escalate.

One dispatcher thread takes alerts off a bounded queue and decides (de-duplicate,
route to a playbook, safety), writing every decision to the store before acting.
Webhook alerts are in the store's inbox before the webhook answers 200: the webhook's own
thread writes every body that arrived together in one transaction (group commit, the
intake's own SQLite connection) and answers without waiting for the dispatcher (see
:meth:`Engine.take`); a restarted engine decides what its inbox still holds.
Remediations run on a small worker pool, one per open incident; the outbox sends pages
on its own thread; the optional webhook receiver runs on its own asyncio loop. A
restarted engine resumes open incidents: a step whose action already ran is verified
again rather than acted on twice.

Size: over 500 lines because the dispatcher, the intake and the inspection helpers the
tests use (``wait_for_action``, ``assert_strategy_ran``) share the Engine's state; the helpers
move out first (issue 14).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import timeline as tl
from ..targets.base import Target
from .actions import REGISTRY, ActionContext, AdminUrl, default_admin_url
from .alerts import Alert, EventAlerts, Probe, Rule, RuleEvaluator
from .escalation import Channel, Outbox
from .playbooks import BUNDLED_PLAYBOOKS, Option, Playbook, Step, load_playbooks
from .postmortem import Postmortem, build_postmortem
from .redaction import LOGGER
from .safety import Safety, SafetyPolicy
from .store import (
    DRY_RUN,
    ESCALATED,
    OPEN,
    RESOLVED,
    WARNED,
    ActionRecord,
    Incident,
    OutboxItem,
    Store,
)
from .targeting import Listing, NoTarget, find_target, retarget
from .verify import FIXED, INCONCLUSIVE, NOT_FIXED, Interrupted, VerifyResult, verify

__all__ = ["SYMPTOM_ALERTS", "Engine", "StrategyRun", "make_engine"]

#: Alerts about what users see rather than why. While a cause (any other alert) has an
#: incident on the same target, or a node is down, a symptom alert is held back, as an
#: Alertmanager inhibit rule would: the rollback the error rate asks for must not fight
#: the pool reset that is fixing the actual cause. Decided once the cause is closed.
SYMPTOM_ALERTS = frozenset({"ErrorRateHighCritical", "HighErrorRate"})


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


@dataclass
class _Run:
    incident: Incident
    resolved: threading.Event = field(default_factory=threading.Event)
    resumed: bool = False


class _Capped(Exception):
    pass


#: an alert to decide and its inbox id (None: not from the webhook, nothing to clear)
_Queued = tuple[Alert, int | None]
#: what the dispatcher's queue holds: one alert, a webhook body's alerts, or None (wake up)
_Item = _Queued | list[_Queued] | None


#: at most this many alerts decided per transaction: the engine's connection holds SQLite's
#: one write lock for one chunk at most, which is what an inbox write may wait for
_CHUNK = 64
#: alerts decided on one listing of the target (read once, only if an alias needs it)
_LISTED_FOR = 256


class Engine:
    """Auto-remediation engine; see the module docstring for its threads."""

    def __init__(
        self,
        target: Target,
        *,
        playbooks_dir: str | Path | Sequence[str | Path],
        store_path: str | Path,
        timeline: tl.Timeline | None = None,
        dry_run: bool = False,
        escalation: Sequence[Channel] = (),
        probes: Mapping[str, Probe] | None = None,
        rules: Sequence[Rule] = (),
        safety: SafetyPolicy | None = None,
        admin_url: AdminUrl = default_admin_url,
        listen: str | None = None,
        webhook_token: str | None = None,
        max_queue: int = 10_000,
        workers: int = 4,
        eval_interval_s: float = 1.0,
        crashloop_restarts: int = 3,
        crashloop_window_s: float = 60.0,
        symptoms: frozenset[str] | set[str] = SYMPTOM_ALERTS,
        own_rules: bool = True,
    ) -> None:
        """``own_rules=False``: raise no alerts from probe rules (Alertmanager does, through
        the webhook); the probes still serve the playbooks' verify conditions."""
        self.target = target
        self.timeline = timeline
        self.dry_run = dry_run
        self.probes: dict[str, Probe] = dict(probes or {})
        self.admin_url = admin_url
        self.listen = listen
        self.webhook_token = webhook_token
        dirs = [playbooks_dir] if isinstance(playbooks_dir, str | Path) else playbooks_dir
        self.playbooks: list[Playbook] = load_playbooks(*dirs)
        self._routes = {name: book for book in self.playbooks for name in book.alerts}
        # fingerprint -> target of an open/escalated incident of an aliased alert, so its
        # repeats and its resolution find the incident without looking the labels up again
        self._located: dict[str, tuple[str, str]] = {}
        self.store = Store(store_path)
        self.safety = Safety(self.store, safety or SafetyPolicy())
        self.outbox = Outbox(self.store, escalation)
        # A rule given here replaces the playbook's rule for the same alert and target
        # (tests shorten `for`; a site tunes a threshold) instead of evaluating both.
        given = {(r.alert, r.target) for r in rules}
        all_rules = (
            [
                *rules,
                *(r for b in self.playbooks for r in b.rules if (r.alert, r.target) not in given),
            ]
            if own_rules
            else []
        )
        self.rules = RuleEvaluator(all_rules, self.probes, self.submit)
        self.event_alerts = EventAlerts(
            self.submit, restarts=crashloop_restarts, window_s=crashloop_window_s
        )
        self.eval_interval_s = eval_interval_s
        # unbounded underneath: max_queue (alerts waiting, not items) is checked on the way
        # in, so the alerts a restart finds in the inbox and held alerts released later are
        # never refused
        self.max_queue = max_queue
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._waiting = 0  # alerts queued, not decided yet (under _lock)
        self._workers = workers
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], _Run] = {}
        self._escalated: dict[tuple[str, str], str] = {}
        self.symptoms = frozenset(symptoms)
        self._held: dict[tuple[str, str], Alert] = {}
        # target -> (alert, target) keys of cause incidents open or escalated on it, counted
        # (a key can be open and escalated at once); "" holds node-wide causes: the
        # inhibitor looks up two entries instead of scanning every incident per symptom alert
        self._causes: dict[str, Counter[tuple[str, str]]] = {}
        self._changed = threading.Condition(threading.Lock())  # waiters in _wait
        # set on the dispatcher's thread while it decides a chunk: its marks wake the
        # waiters once, after the commit (what they read is then in the store)
        self._chunking = threading.local()
        self._busy = 0
        # dry runs the dispatcher's chunk opened, run at its end in its transaction (so a
        # repeat in the same chunk is a duplicate of the open incident, as on the pool),
        # and the causes they closed, whose held symptom alerts are released once the chunk
        # has committed (a release may ask a probe: not under the store's write lock).
        # The dispatcher's thread only
        self._dry_in_chunk: list[_Run] = []
        self._closed_in_chunk: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._webhook = None
        self.webhook_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Engine:
        self._stop.clear()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="engine-remediate")
        self._resume()
        self._spawn(self._dispatch, "engine-dispatch")
        if self.rules.rules:
            self._spawn(self._evaluate, "engine-rules")
        self.outbox.start()
        self._unsubscribe = self.target.subscribe(self.event_alerts)
        if self.listen is not None:
            from .webhook import WebhookServer

            self._webhook = WebhookServer(self, self.listen, token=self.webhook_token)
            self.webhook_url = self._webhook.start()
        return self

    def stop(self) -> None:
        """Stop taking alerts and acting; open incidents stay open for the next start."""
        if self._webhook is not None:
            self._webhook.stop()
            self._webhook = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._queue.put_nowait(None)  # wake the dispatcher
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.outbox.stop()
        with self._lock:
            for key in list(self._open):
                self._pop_open(key)

    def close(self) -> None:
        self.stop()
        self.store.close()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, fn: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=fn, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- alerts in ---------------------------------------------------------------------

    def submit(self, alert: Alert) -> bool:
        """Queue an alert; False when the queue is full."""
        if not self._reserve(1):
            return False
        self._queue.put_nowait((alert, None))
        return True

    def receive(self, alerts: Sequence[Alert]) -> Future[bool]:
        """Take one webhook body's alerts durably; see :meth:`take` (done when returned)."""
        written: Future[bool] = Future()
        try:
            written.set_result(self.take([alerts])[0])
        except Exception as exc:
            written.set_exception(exc)
        return written

    def take(self, deliveries: Sequence[Sequence[Alert]]) -> list[bool]:
        """Write webhook bodies' alerts to the inbox in one transaction, then queue them.

        Per body: True once its alerts are in the store's inbox, so a 200 is answered only
        for alerts that survive a SIGKILL; False when the queue has no room for all of them
        (503: Alertmanager re-sends the whole body). Raises if the store cannot write (503
        for every body). Runs on the caller's thread (the webhook's, which calls it once for
        every body that arrived together: group commit) and waits for another write
        transaction's statements at most, never for the dispatcher's decisions.
        """
        room = [self._reserve(len(alerts)) for alerts in deliveries]
        taken = [tuple(alerts) for alerts, ok in zip(deliveries, room, strict=True) if ok]
        if not taken:
            return room
        try:
            written = self.store.receive(taken)
        except Exception:  # answered 503 (Alertmanager re-sends): not decided
            LOGGER.exception("webhook alerts could not be stored")
            with self._lock:
                self._waiting -= sum(len(alerts) for alerts in taken)
            raise
        for alerts, inbox_ids in zip(taken, written, strict=True):
            # queued before the answer: idle() never sees an answered body as no work
            self._queue.put_nowait(list(zip(alerts, inbox_ids, strict=True)))
        return room

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

    def _evaluate(self) -> None:
        while not self._stop.wait(self.eval_interval_s):
            try:
                self.rules.tick()
            except Exception:  # one bad rule must not stop detection
                LOGGER.exception("rule evaluation failed")

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
            for key in closed:
                self._release_held(*key)

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
            with self._lock:
                held = self._held.pop(key, None)
            if held is not None:
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
        cause = self._inhibitor(alert)
        if cause is not None:
            with self._lock:
                self._held[key] = alert
            self.store.add_alert(alert, f"inhibited: {cause}")
            LOGGER.info("%s on %s held back: %s", alert.name, alert.target, cause)
            return
        now = time.time()
        book = self._routes.get(alert.name)
        if book is None:
            incident = self._open_incident(alert, None, now)
            self._escalate(incident, f"no playbook handles alert {alert.name!r}")
            return
        if no_target is not None:
            # nothing was tried, so the page carries the alert's own severity, not the
            # playbook's "remediation failed" one
            incident = self._open_incident(alert, book, now, severity=alert.severity)
            self.store.note(incident.id, "no_target", f"{no_target}; nothing was done")
            self._escalate(incident, no_target)
            return
        decision = self.safety.admit(alert.name, alert.target, now)
        if not decision.allowed and decision.reason == "cooldown":
            self.store.add_alert(alert, "suppressed: cooldown")
            return
        incident = self._open_incident(alert, book, now)
        if not decision.allowed:
            self._escalate(incident, f"auto-remediation refused: {decision.reason}")
            return
        self.safety.begin(alert.name, alert.target, now)
        # a dry run touches nothing but the store: its whole trail goes into this chunk's
        # transaction, decided here, rather than a worker's transaction per incident
        self._launch(_Run(incident), inline=self.dry_run)

    def _inhibitor(self, alert: Alert) -> str | None:
        """The cause incident that explains this symptom alert, if any (see SYMPTOM_ALERTS)."""
        if self._known_as(alert.name) not in self.symptoms:
            return None
        with self._lock:
            for scope in (alert.target, ""):
                for name, target in self._causes.get(scope, ()):
                    return f"{name} on {target} is being handled"
        return None

    def _handling(self, key: tuple[str, str], *, started: bool) -> None:
        """Count ``key`` in or out of the causes the inhibitor sees (call under ``_lock``)."""
        cause = self._known_as(key[0])
        if cause in self.symptoms:
            return
        scope = "" if cause == "NodeNotReady" else key[1]
        keys = self._causes.get(scope)
        if keys is None:  # not setdefault: a Counter built per call costs a storm
            keys = self._causes[scope] = Counter()
        keys[key] += 1 if started else -1
        if keys[key] <= 0:
            del keys[key]
            if not keys:
                del self._causes[scope]

    def _set_open(self, run: _Run) -> None:
        key = (run.incident.alert_name, run.incident.target)
        if key not in self._open:
            self._handling(key, started=True)
        self._open[key] = run

    def _pop_open(self, key: tuple[str, str]) -> None:
        if self._open.pop(key, None) is not None:
            self._handling(key, started=False)

    def _set_escalated(self, key: tuple[str, str], incident_id: str) -> None:
        if key not in self._escalated:
            self._handling(key, started=True)
        self._escalated[key] = incident_id

    def _pop_escalated(self, key: tuple[str, str]) -> None:
        if self._escalated.pop(key, None) is not None:
            self._handling(key, started=False)

    def _release_held(self, closed_alert: str, closed_target: str) -> None:
        """Decide held symptom alerts whose cause incident is closed (still breaching ones).

        Only a cause closing can release anything, and only symptoms on its target (any
        target for a node): the rest is not looked at, which keeps an alert storm linear.
        """
        closed = self._known_as(closed_alert)
        if closed in self.symptoms:
            return
        with self._lock:
            held = [
                (key, alert)
                for key, alert in self._held.items()
                if closed == "NodeNotReady" or alert.target == closed_target
            ]
        for key, alert in held:
            if self._inhibitor(alert) is None:
                with self._lock:
                    self._held.pop(key, None)
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
                self._escalate(incident, f"playbook {incident.playbook!r} no longer loaded")
                continue
            self._launch(_Run(incident, resumed=True))
        for incident in self.store.incidents(status=ESCALATED):
            self._remember_location(incident)
            with self._lock:
                self._set_escalated((incident.alert_name, incident.target), incident.id)
        for inbox_id, alert in self.store.inbox():  # taken (answered 200), not yet decided
            self._reserve(1, always=True)
            self._queue.put_nowait((alert, inbox_id))

    def _launch(self, run: _Run, *, inline: bool = False) -> None:
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
        self, run: _Run, *, release: Callable[[tuple[str, str]], object] | None = None
    ) -> None:
        """Run ``run``'s playbook; ``release``: hand the held-alert release to the caller."""
        incident = run.incident
        keep_open = False
        try:
            # a dry run acts on nothing but the store (no action, no verify): its whole
            # trail is one transaction instead of a commit per line
            with self.store.transaction() if self.dry_run else contextlib.nullcontext():
                keep_open = self._run_or_escalate(run)
        finally:
            if not keep_open:
                with self._lock:
                    self._pop_open((incident.alert_name, incident.target))
                    escalated = (incident.alert_name, incident.target) in self._escalated
                if not escalated:
                    self._forget_location((incident.alert_name, incident.target))
                # before going idle: a released alert is queued work
                if release is not None:
                    release((incident.alert_name, incident.target))
                else:
                    self._release_held(incident.alert_name, incident.target)
            with self._lock:
                self._busy -= 1

    def _run_or_escalate(self, run: _Run) -> bool:
        """Run the playbook; True if the incident stays open (the engine stopped mid-way)."""
        incident = run.incident
        try:
            self._run_steps(run)
        except Interrupted:
            self.store.note(incident.id, "interrupted", "engine stopped mid-remediation")
            return True
        except _Capped as capped:
            self._escalate(incident, f"auto-remediation stopped: {capped}")
        except Exception as exc:
            LOGGER.exception("remediation of %s failed", incident.id)
            self._escalate(incident, f"engine error: {type(exc).__name__}: {exc}")
        return False

    def _run_steps(self, run: _Run) -> None:
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
                self._close(incident, DRY_RUN, f"dry run: would have run step {step.name!r}")
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
                self._close(incident, RESOLVED, f"{result.outcome} after step {step.name!r}")
                return
            if policy == "warn":
                self._close(incident, WARNED, f"warning: {result.condition}: {result.detail}")
                LOGGER.warning("%s on %s: %s", incident.alert_name, incident.target, result.detail)
                return
            if policy == "escalate":
                break
        if not tried:  # e.g. a warning-level alert the playbook acts on only when critical
            self._escalate(
                incident,
                f"no step of playbook {book.name!r} applies to this alert "
                f"(severity {incident.alert.severity!r}): nothing was done",
            )
            return
        reason = f"still failing after playbook {book.name!r}"
        self._escalate(incident, reason)
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
            dry = {"result": "dry_run", "detail": f"would have done: {call.describe()}"}
            # check the caps and record the action atomically: parallel incidents share them
            with self.store.transaction():
                decision = self.safety.allow_action(incident.target, time.time())
                if not decision.allowed:
                    raise _Capped(decision.reason)
                action_id = self.store.action_started(
                    incident.id, incident.target, index, book.name, call.name, call.params,
                    **(dry if self.dry_run else {}),
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

    def _close(self, incident: Incident, status: str, reason: str) -> None:
        with self.store.transaction():
            self.store.update_incident(
                incident.id, status=status, reason=reason, closed_at=time.time()
            )
            self.store.note(incident.id, status, reason)
        with self._changed:
            self._changed.notify_all()

    def _escalate(self, incident: Incident, reason: str) -> None:
        # A dry run decides and records the escalation but pages nobody: it is the engine
        # observing (a --remediation-baseline run, --dry-run serve), not on call.
        pages = bool(self.outbox.channels) and not self.dry_run
        with self.store.transaction():  # the incident escalated and its page queued, or neither
            self.store.update_incident(incident.id, status=ESCALATED, reason=reason)
            note = f"{reason}; dry run: nobody paged" if self.dry_run else reason
            self.store.note(incident.id, "escalated", note)
            with self._lock:
                self._set_escalated((incident.alert_name, incident.target), incident.id)
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

    def _close_escalated(self, key: tuple[str, str], incident_id: str) -> None:
        """The alert resolved after a page: close the incident and resolve the page."""
        with self._lock:
            self._pop_escalated(key)
        self._forget_location(key)
        self._release_held(*key)
        incident = self.store.incident(incident_id)
        if incident is None:
            return
        self._close(incident, RESOLVED, f"{incident.reason}; alert resolved after escalation")
        if not self.dry_run:  # nothing was paged, so there is nothing to resolve
            self.outbox.enqueue(self.store.incident(incident_id) or incident, "resolve")

    def _mark(self, kind: str, name: str, **detail: object) -> None:
        if self.timeline is not None:
            at = detail.pop("at", None)
            self.timeline.mark(kind, name, at=at, **detail)  # type: ignore[arg-type]
        if not getattr(self._chunking, "on", False):  # a chunk wakes the waiters once
            self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

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
    # Plain AssertionError, no pytest: the engine stays importable without it.

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


def make_engine(
    target: Target,
    *,
    store_path: str | Path,
    playbooks_dir: str | Path | None = None,
    rootdir: str | Path | None = None,
    timeline: tl.Timeline | None = None,
    **options: object,
) -> Engine:
    """The factory the pytest plugin calls, with the bundled playbooks under the project's.

    The project's playbooks are ``playbooks_dir`` when given, else ``<rootdir>/remediators``
    when that exists: a project without one still gets every bundled strategy.
    Returns an Engine not yet started; the fixture starts it and closes it at teardown.
    """
    dirs: list[str | Path] = [BUNDLED_PLAYBOOKS]
    if playbooks_dir is not None:
        dirs.append(playbooks_dir)
    elif (own := Path(rootdir or Path.cwd()) / "remediators").is_dir():
        dirs.append(own)
    return Engine(
        target,
        playbooks_dir=dirs,
        store_path=store_path,
        timeline=timeline,
        **options,  # type: ignore[arg-type]
    )
