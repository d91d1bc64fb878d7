"""What every fault shares: ledger first, timeline marks, idempotent revert, dry run.

A fault subclass only says how to act and how to undo. :class:`FaultSession` owns the
order that makes faults safe: the ledger entry is written before the fault acts, the
entry is closed only after the revert is confirmed, and :meth:`FaultSession.revert_all`
undoes everything still active whatever ended the test (failure, Ctrl-C, SIGTERM). A
fault that failed before changing anything (a precondition: no iptables, no root, no
such pod) leaves no entry at all.

Faults carried out by the target (:class:`TargetFault`: network block, disk fill, memory
stress, node failure) keep validation, ``describe`` and ``plan`` here and call the
target's primitive, which writes :class:`~..targets.base.ChangeRecord` s ahead into the
fault's ledger spec. After a SIGKILL the entry survives, and :func:`revert_entries` undoes
it from the spec alone: ``target.undo(record)`` for each record, else the reverter
registered for the fault's kind. A reverter that can prove the fault cannot still be
acting (its server, process, mount or rule is gone) says why, and the entry is closed.

A fault class of the user's own (a scenario's module) says how with
:meth:`Fault.undo_from_spec`; its entry names the module that defined it, and the cleanup
process imports that module to find it (the same trust as pytest importing a conftest).
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import inspect
import logging
import secrets
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import FaultError, ResilienceError
from ..ledger import Ledger, LedgerEntry
from ..targets.base import ChangeLog, Target
from ..timeline import FAULT_INJECTED, FAULT_REVERTED, Timeline

__all__ = [
    "ActiveFault",
    "Fault",
    "FaultContext",
    "FaultSession",
    "TargetFault",
    "is_settled",
    "ledger_ref",
    "register_reverter",
    "undo_recorded",
]

log = logging.getLogger("pytest_resilience.faults")

#: undoes a ledger spec; returns why nothing was left to undo (None: it undid the fault)
Reverter = Callable[[dict[str, Any], "FaultContext"], str | None]
_REVERTERS: dict[str, Reverter] = {}
_SESSIONS: weakref.WeakSet[FaultSession] = weakref.WeakSet()


@dataclass
class FaultContext:
    target: Target
    timeline: Timeline | None = None
    dry_run: bool = False


class Fault(abc.ABC):
    """One reversible injection. Subclasses keep their own state for :meth:`revert`."""

    kind: ClassVar[str]
    #: Names this injection on the system (e.g. Kubernetes annotations); set by
    #: :class:`FaultSession` before :meth:`inject`, see :func:`ledger_ref`.
    ledger_id: str = ""

    def note(self, spec: dict[str, Any]) -> None:
        """Write what :meth:`inject` learnt (a file path, a rule handle) to the ledger
        *before* acting on it, so a SIGKILL mid-inject still leaves a revertable entry."""
        if self._note is not None:
            self._note(spec)

    _note: Callable[[dict[str, Any]], None] | None = None

    @property
    def acted(self) -> bool:
        """Whether :meth:`inject` may have changed anything; False after a failed
        precondition, so the session leaves no ledger entry for it."""
        return True

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for logs, the timeline and the ledger: what, where, how much."""

    @abc.abstractmethod
    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        """Act; return the spec a later process needs to undo it (JSON-able)."""

    @abc.abstractmethod
    def revert(self, ctx: FaultContext) -> None:
        """Undo; called at most once per successful inject, must tolerate a half-done inject."""

    def plan(self) -> dict[str, Any]:
        """What is known before acting; written to the ledger ahead of :meth:`inject`."""
        return {}

    @classmethod
    def undo_from_spec(cls, spec: dict[str, Any], ctx: FaultContext) -> str | None:
        """After a SIGKILL, in another process: undo the fault from its ledger spec alone.

        Return None once undone, or why nothing was left to undo (see :mod:`.proof`: the
        pods that held it are gone, the session that drove it is dead). A subclass that
        defines this is registered as its kind's reverter; without it, ``--chaos-cleanup``
        can only leave the entry open. ``spec`` is what :meth:`plan`, :meth:`note` and
        :meth:`inject` wrote, plus ``ledger_id``, ``target``, ``owner_pid`` and ``owner_host``.
        """
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "undo_from_spec" in cls.__dict__ and "kind" in cls.__dict__:
            _REVERTERS[cls.kind] = cls.undo_from_spec


def _origin(fault: Fault) -> dict[str, Any]:
    """Where a cleanup process finds a fault class that is not one of the package's own."""
    cls = type(fault)
    if cls.__module__.split(".")[0] == __name__.split(".")[0]:
        return {}  # load_all() imports the package's fault modules
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        path = None
    return {"origin": {"module": cls.__module__, "file": path}}


def _import_origin(origin: dict[str, Any]) -> str | None:
    """Import the module that defined a fault class; why it could not be, if so."""
    module, path = str(origin.get("module") or ""), origin.get("file")
    if module in sys.modules:
        return None
    try:
        importlib.import_module(module)
        return None
    except ImportError:
        pass
    if not path:
        return f"its module {module!r} is not importable here and named no file"
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        return f"its module {module!r} ({path}) cannot be loaded"
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except Exception as exc:  # a user's module: whatever it raises, say it and go on
        del sys.modules[module]
        return f"its module {module!r} ({path}) failed to import: {exc}"
    return None


class TargetFault(Fault):
    """A fault the target carries out with one of its primitives; undo is the target's.

    Subclasses validate, describe and plan, and call the primitive with :attr:`changes`
    in :meth:`inject`; :meth:`revert` undoes the records newest first.
    """

    _changes: ChangeLog | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # also for an entry killed before its first record
            _REVERTERS[cls.kind] = undo_recorded

    @property
    def changes(self) -> ChangeLog:
        """The records of this fault's changes, written ahead to its ledger entry."""
        if self._changes is None:  # injected without a FaultSession: nothing persists them
            self._changes = ChangeLog(self.ledger_id or f"unledgered-{secrets.token_hex(6)}")
        return self._changes

    @property
    def acted(self) -> bool:
        return bool(self.changes.records)

    def spec(self) -> dict[str, Any]:
        return {**self.plan(), **self.changes.spec()}

    def revert(self, ctx: FaultContext) -> None:
        changes = self.changes
        for record in reversed(changes.records):
            ctx.target.undo(record)
        if not changes.complete:  # killed or failed mid-primitive: what has no record yet
            ctx.target.undo_unrecorded(changes.ledger_id, made_on=ctx.target.name)


def undo_recorded(spec: dict[str, Any], ctx: FaultContext) -> str | None:
    """The reverter of every :class:`TargetFault`: undo its records from the spec alone."""
    reasons: list[str] = []
    undone = 0
    for record in reversed(spec.get("records") or []):
        reason = ctx.target.undo(record)
        if reason is None:
            undone += 1
        elif reason not in reasons:
            reasons.append(reason)
    found = ctx.target.undo_unrecorded(str(spec["ledger_id"]), made_on=str(spec["target"]))
    if undone or found:
        return None
    if not spec.get("records"):
        return "it never acted: no change was recorded before its run ended"
    return "; ".join(reasons) or None


def register_reverter(kind: str) -> Callable[[Reverter], Reverter]:
    """Register how to undo a ``kind`` fault from its ledger spec alone (after SIGKILL)."""

    def decorator(func: Reverter) -> Reverter:
        _REVERTERS[kind] = func
        return func

    return decorator


class ActiveFault:
    """The handle a fault fixture returns: a context manager, or reverted at teardown."""

    def __init__(self, session: FaultSession, fault: Fault, entry_id: int | None) -> None:
        self.fault = fault
        self.entry_id = entry_id
        self.spec: dict[str, Any] = {}
        self.injected_at: float | None = None
        self.reverted_at: float | None = None
        self._session = session
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.injected_at is not None and self.reverted_at is None

    def revert(self) -> None:
        """Undo the fault; a second call does nothing."""
        self._session._revert(self)

    def __enter__(self) -> ActiveFault:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.revert()

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"<{self.fault.kind} {self.fault.describe()!r} {state}>"


class FaultSession:
    """The faults of one test: injects in order, reverts in reverse order."""

    def __init__(
        self,
        target: Target,
        *,
        ledger: Ledger | None,
        timeline: Timeline | None = None,
        dry_run: bool = False,
    ) -> None:
        self.ctx = FaultContext(target=target, timeline=timeline, dry_run=dry_run)
        self.ledger = ledger
        self._faults: list[ActiveFault] = []
        _SESSIONS.add(self)

    def inject(self, fault: Fault) -> ActiveFault:
        description = fault.describe()
        if self.ctx.dry_run:
            log.warning("dry run: would inject %s: %s", fault.kind, description)
            self._mark(FAULT_INJECTED, fault, dry_run=True)
            return ActiveFault(self, fault, None)
        entry_id = None
        noted: dict[str, Any] = {}
        planned = {**fault.plan(), **_origin(fault)}
        if self.ledger is not None:
            entry_id = self.ledger.open(
                fault.kind, target=self.ctx.target.name, description=description, spec=planned
            )
            fault.ledger_id = ledger_ref(self.ledger.session, entry_id)
            ledger = self.ledger

            def note(spec: dict[str, Any]) -> None:
                noted.update(spec)
                ledger.update_spec(entry_id, {**planned, **noted})

            fault._note = note
        else:
            fault.ledger_id = f"unledgered-{secrets.token_hex(6)}"
        if isinstance(fault, TargetFault):
            fault._changes = ChangeLog(
                fault.ledger_id, persist=lambda records: fault.note({"records": records})
            )
        handle = ActiveFault(self, fault, entry_id)
        self._faults.append(handle)
        # T0 is when the fault starts acting: the platform's reaction (a pod_died event)
        # can land on the timeline before inject() returns, and must not precede T0.
        acting_at = self._now()
        try:
            handle.spec = fault.inject(self.ctx) or {}
        except BaseException as exc:
            if not fault.acted:  # a failed precondition: nothing to undo, no entry to keep
                self._faults.remove(handle)
                if self.ledger is not None and entry_id is not None:
                    self.ledger.discard(entry_id)
            else:  # a half-done inject is still a fault on the system: undo what we can
                handle.injected_at = acting_at
                self._revert(handle)
            if isinstance(exc, ResilienceError | KeyboardInterrupt | SystemExit):
                raise
            raise FaultError(f"could not inject {fault.kind} ({description}): {exc}") from exc
        if self.ledger is not None and entry_id is not None and handle.spec:
            # what was noted ahead stays: a cleanup needs it as much as what inject returned
            self.ledger.update_spec(entry_id, {**planned, **noted, **handle.spec})
        handle.injected_at = self._mark(FAULT_INJECTED, fault, at=acting_at)
        log.info("injected %s: %s", fault.kind, description)
        return handle

    def _revert(self, handle: ActiveFault) -> None:
        with handle._lock:
            if handle.injected_at is None and not self.ctx.dry_run:
                return
            if handle.reverted_at is not None:
                return
            if not self.ctx.dry_run:
                handle.fault.revert(self.ctx)
                if self.ledger is not None and handle.entry_id is not None:
                    self.ledger.close(handle.entry_id)
            handle.reverted_at = self._mark(FAULT_REVERTED, handle.fault, dry_run=self.ctx.dry_run)
            log.info("reverted %s: %s", handle.fault.kind, handle.fault.describe())

    def revert_all(self) -> None:
        """Revert every active fault, newest first; report all failures, not just the first."""
        errors: list[str] = []
        for handle in reversed(self._faults):
            try:
                self._revert(handle)
            except Exception as exc:
                log.exception("revert of %s failed", handle.fault.kind)
                errors.append(f"{handle.fault.kind} ({handle.fault.describe()}): {exc}")
        if errors:
            raise FaultError(
                "could not revert: " + "; ".join(errors) + ". The ledger keeps these entries; "
                "run `pytest --chaos-cleanup` once the cause is fixed."
            )

    @property
    def active(self) -> list[ActiveFault]:
        return [h for h in self._faults if h.active]

    def _now(self) -> float:
        return self.ctx.timeline.now() if self.ctx.timeline else time.time()

    def _mark(self, kind: str, fault: Fault, *, at: float | None = None, **detail: Any) -> float:
        if self.ctx.timeline is None:
            return time.time() if at is None else at
        event = self.ctx.timeline.mark(
            kind, fault.kind, at=at, description=fault.describe(), **detail
        )
        return event.at


def revert_every_session() -> None:
    """Last resort at interpreter or session end: nothing stays injected."""
    for session in list(_SESSIONS):
        try:
            session.revert_all()
        except FaultError:
            log.exception("revert at session end failed")


def ledger_ref(session: str, entry_id: int) -> str:
    """A ledger entry's name unique across ledgers and machines: ``<session>#<id>``."""
    return f"{session}#{entry_id}"


#: how an outcome of :func:`revert_entries` starts when the fault was proven gone already
CLOSED = "closed, nothing left to undo:"


def is_settled(outcome: str) -> bool:
    """Whether an outcome of :func:`revert_entries` closed its entry (reverted or proven gone)."""
    return outcome == "reverted" or outcome.startswith(CLOSED)


def revert_entries(
    entries: list[LedgerEntry], ledger: Ledger, ctx: FaultContext
) -> list[tuple[LedgerEntry, str]]:
    """Undo what a killed run left open, from the ledger specs alone."""
    from . import load_all

    load_all()  # a fresh cleanup process has imported no fault module, so no reverter yet
    outcomes: list[tuple[LedgerEntry, str]] = []
    for entry in entries:
        reverter, why = _reverter_for(entry)
        if reverter is None:
            outcomes.append((entry, f"no reverter for kind {entry.kind!r}: {why}; left open"))
            continue
        try:
            # What the spec cannot know (it was written before the id existed): which
            # entry it is and where it was made, for a fault killed halfway through inject.
            settled = reverter(
                {
                    "ledger_id": ledger_ref(entry.session, entry.id),
                    "target": entry.target,
                    "owner_pid": entry.pid,
                    "owner_host": entry.host,
                    **entry.spec,
                },
                ctx,
            )
        except Exception as exc:
            outcomes.append((entry, f"revert failed: {exc}"))
            continue
        if settled:  # proven unable to act any more: closed, saying why
            ledger.close(entry.id, outcome=f"closed by cleanup: {settled}")
            outcomes.append((entry, f"{CLOSED} {settled}"))
            continue
        ledger.close(entry.id, outcome="reverted by cleanup")
        outcomes.append((entry, "reverted"))
    return outcomes


def _reverter_for(entry: LedgerEntry) -> tuple[Reverter | None, str]:
    """The reverter of an entry's kind, importing the user's module that defined it."""
    if "records" in entry.spec:
        return undo_recorded, ""
    if entry.kind not in _REVERTERS and isinstance(entry.spec.get("origin"), dict):
        failed = _import_origin(entry.spec["origin"])
        if failed:
            return None, failed
    reverter = _REVERTERS.get(entry.kind)
    if reverter is not None:
        return reverter, ""
    origin = entry.spec.get("origin") or {}
    where = f" in {origin.get('module')}" if origin else ""
    return None, f"its Fault class{where} defines no undo_from_spec"
