"""The Engine: alert in -> playbook step -> action(s) -> verify -> resolve or escalate.

One dispatcher thread takes alerts off a bounded queue and decides (de-duplicate,
inhibit, route to a playbook, safety), writing every decision to the store before acting.
Webhook alerts are in the store's inbox before the webhook answers 200: the webhook's own
thread writes every body that arrived together in one transaction (group commit, the
intake's own SQLite connection) and answers without waiting for the dispatcher (see
:meth:`Engine.take`); a restarted engine decides what its inbox still holds.
Remediations run on a small worker pool, one per open incident; the outbox sends pages
on its own thread; the optional webhook receiver runs on its own asyncio loop. A
restarted engine resumes open incidents: a step whose action already ran is verified
again rather than acted on twice.

The Engine is built here (its state, threads and intake); its jobs live by module:
deciding in :mod:`.dispatch`, the remediation steps in :mod:`.remediation`, the results
and the waits and assertions scenarios use in :mod:`.inspection`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import timeline as tl
from ..targets.base import Target
from .actions import AdminUrl, default_admin_url
from .alerts import Alert, EventAlerts, Probe, Rule, RuleEvaluator
from .dispatch import Dispatch, _Item
from .escalation import Channel, Outbox
from .inhibition import SYMPTOM_ALERTS, Inhibitor, InhibitRule
from .inspection import Inspection, StrategyRun
from .playbooks import BUNDLED_PLAYBOOKS, Playbook, load_playbooks
from .redaction import LOGGER
from .remediation import RemediationRun, Remediator
from .safety import Safety, SafetyPolicy
from .store import Store

if TYPE_CHECKING:
    from .webhook import WebhookServer

__all__ = ["SYMPTOM_ALERTS", "Engine", "StrategyRun", "make_engine"]


class Engine(Dispatch, Inspection):
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
        inhibit_rules: Sequence[InhibitRule] | None = None,
        own_rules: bool = True,
    ) -> None:
        """``own_rules=False``: raise no alerts from probe rules (Alertmanager does, through
        the webhook); the probes still serve the playbooks' verify conditions.
        ``inhibit_rules``: instead of the loaded playbooks' (``()``: hold nothing back)."""
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
        # A rule given here replaces the playbooks' rules for the same alert, whatever their
        # target (tests shorten `for`; a site tunes a threshold or names its own entry
        # service): a bundled `target: api` rule kept beside it would raise alerts about a
        # workload the project may not have.
        given = {r.alert for r in rules}
        all_rules = (
            [*rules, *(r for b in self.playbooks for r in b.rules if r.alert not in given)]
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
        self._open: dict[tuple[str, str], RemediationRun] = {}
        self._escalated: dict[tuple[str, str], str] = {}
        if inhibit_rules is None:
            inhibit_rules = [rule for book in self.playbooks for rule in book.inhibit_rules]
        self.inhibitor = Inhibitor(inhibit_rules, self._known_as)
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
        self._dry_in_chunk: list[RemediationRun] = []
        self._closed_in_chunk: list[Alert] = []
        self._stop = threading.Event()
        self.remediator = Remediator(
            target=target,
            playbooks=self.playbooks,
            store=self.store,
            safety=self.safety,
            outbox=self.outbox,
            rules=self.rules,
            probes=self.probes,
            admin_url=admin_url,
            dry_run=dry_run,
            stop=self._stop,
            mark=self._mark,
            escalated=self._on_escalated,
            changed=self._notify,
        )
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._webhook: WebhookServer | None = None
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

    def _evaluate(self) -> None:
        while not self._stop.wait(self.eval_interval_s):
            try:
                self.rules.tick()
            except Exception:  # one bad rule must not stop detection
                LOGGER.exception("rule evaluation failed")


def make_engine(
    target: Target,
    *,
    store_path: str | Path,
    playbooks_dir: str | Path | None = None,
    rootdir: str | Path | None = None,
    timeline: tl.Timeline | None = None,
    **options: Any,
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
        **options,
    )
