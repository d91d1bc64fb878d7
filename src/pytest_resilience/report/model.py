"""What one chaos test leaves for the report: its outcome, timeline, SLO verdicts and actions.

A :class:`ScenarioResult` is plain data (``to_dict``/``from_dict`` round-trip through JSON),
so the standalone report can be rebuilt from the JSON twin and the history directory holds
nothing but JSON. Every time in it is in seconds from T0 (the first fault), like
:meth:`Timeline.figures`, except ``timeline`` itself, which is ``Timeline.to_dict()``
verbatim (wall-clock times) so a figure can always be traced back to its events.
A scenario that never injected a fault has no T0: its times count from the scenario's
start instead (:attr:`ScenarioResult.time_origin` says which), never wall-clock epochs.
A Chaos Toolkit experiment's journal (:attr:`ScenarioResult.journal`, journal.py) is read
from the timeline's ``experiment_activity`` events in the same way, so it needs no field of
its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError
from ..timeline import (
    ACTION_FINISHED,
    ACTION_STARTED,
    ESCALATED,
    FAULT_INJECTED,
    SLO_BREACHED,
    SLO_RECOVERED,
    VERIFIED,
    Figures,
    Timeline,
)
from .origin import from_start, seconds_since, start_of, time_zero

#: a dataclass that _build makes from a mapping
_D = TypeVar("_D", bound="DataclassInstance")

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from .journal import ExperimentJournal

__all__ = [
    "MODES",
    "OUTCOMES",
    "PROBE_PATHS",
    "ReportedAction",
    "SLOVerdict",
    "ScenarioResult",
]

OUTCOMES = ("passed", "failed", "error", "skipped")
PROBE_PATHS = ("built-in", "prometheus")
#: "automated": the engine acts (every run); "baseline": the same scenario again with the
#: engine observing only (``--remediation-baseline``, see ``pytest_resilience.baseline``)
MODES = ("automated", "baseline")


@dataclass
class SLOVerdict:
    """One SLO's verdict; ``slo.verdicts()`` dicts convert through :meth:`from_dict`."""

    name: str
    objective: str
    held: bool
    worst_value: float | None = None
    #: seconds from T0 (from the scenario's start when it has no T0)
    worst_at: float | None = None
    #: seconds from T0 until it was back within bound for good; None if it never breached
    #: or never came back (``held`` tells which)
    recovered_within_s: float | None = None
    #: seconds spent in breach
    breached_s: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "slo verdict") -> SLOVerdict:
        return _build(cls, data, source)


@dataclass
class ReportedAction:
    """One remediation action the engine took; times in seconds from T0 (or the start)."""

    strategy: str
    action: str
    started_at: float | None
    finished_at: float | None
    ok: bool | None
    #: the verify step's result: "passed", "failed: <why>", or None when nothing verified it
    verify: str | None = None
    target: str = ""
    error: str = ""
    #: decided in dry run (``--chaos-dry-run``, a baseline run): recorded, not done
    dry_run: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "action") -> ReportedAction:
        return _build(cls, data, source)

    @property
    def succeeded(self) -> bool:
        return bool(self.ok) and not (self.verify or "").startswith("failed")


@dataclass
class ScenarioResult:
    nodeid: str
    name: str
    outcome: str
    duration_s: float
    timeline: dict[str, Any]
    slo_verdicts: list[SLOVerdict] = field(default_factory=list)
    actions: list[ReportedAction] = field(default_factory=list)
    pages_sent: int = 0
    target: str = "local"
    probe_path: str = "built-in"
    mode: str = "automated"
    #: the nodeid of the other run of the same scenario (automated <-> baseline), or ""
    twin: str = ""
    #: baseline only: what it raised that is expected without automation (it passed anyway)
    expected_failure: str = ""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"mode must be one of {', '.join(MODES)}, got {self.mode!r}",
                source=self.nodeid or "scenario result",
                field="mode",
            )
        if self.outcome not in OUTCOMES:
            raise ConfigError(
                f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}",
                source=self.nodeid or "scenario result",
                field="outcome",
            )
        if not isinstance(self.timeline, dict):
            raise ConfigError(
                f"timeline must be Timeline.to_dict(), got {type(self.timeline).__name__}",
                source=self.nodeid or "scenario result",
                field="timeline",
            )

    @property
    def figures(self) -> Figures:
        """Time to detect / mitigate / recover and healed_by, as the timeline computed them."""
        stored = self.timeline.get("figures")
        if isinstance(stored, Mapping) and set(stored) >= {f.name for f in _FIGURE_FIELDS}:
            return Figures(**{f.name: stored[f.name] for f in _FIGURE_FIELDS})
        return Timeline.from_dict(self.timeline).figures()

    @property
    def t0(self) -> float | None:
        t0 = self.timeline.get("t0")
        if t0 is not None:
            return float(t0)
        injected = [e["at"] for e in self.timeline.get("events", ()) if e["kind"] == FAULT_INJECTED]
        return min(injected) if injected else None

    @property
    def time_origin(self) -> str:
        """What the result's times count from: "T0" (the first fault), or "start" without one."""
        return "T0" if self.t0 is not None else "start"

    @property
    def zero(self) -> float:
        """The wall-clock time that :attr:`time_origin` names."""
        t0 = self.t0
        return t0 if t0 is not None else start_of(self.timeline)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "scenario result"
    ) -> ScenarioResult:
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping, got {type(data).__name__}", source=source)
        where = f"{source} {data.get('nodeid', '?')}"
        values = dict(data)
        values["slo_verdicts"] = [
            SLOVerdict.from_dict(v, source=where) for v in _list(data, "slo_verdicts", where)
        ]
        values["actions"] = [
            ReportedAction.from_dict(a, source=where) for a in _list(data, "actions", where)
        ]
        return _build(cls, values, source)

    @classmethod
    def from_timeline(
        cls,
        timeline: Timeline,
        *,
        nodeid: str,
        outcome: str,
        duration_s: float,
        name: str | None = None,
        slo_verdicts: Iterable[SLOVerdict | Mapping[str, Any]] = (),
        actions: Iterable[ReportedAction | Mapping[str, Any]] | None = None,
        pages_sent: int | None = None,
        target: str = "local",
        probe_path: str = "built-in",
        mode: str = "automated",
        twin: str = "",
        expected_failure: str = "",
    ) -> ScenarioResult:
        """Build the result at teardown; actions and pages default to what the timeline holds.

        ``slo_verdicts`` takes ``SLOMonitor.verdicts()`` as it is; a verdict without
        ``recovered_within_s`` gets it from the timeline's SLO_RECOVERED events.
        """
        data = timeline.to_dict()
        t0 = data["t0"]
        verdicts = [
            v if isinstance(v, SLOVerdict) else SLOVerdict.from_dict(v, source=nodeid)
            for v in slo_verdicts
        ]
        for verdict in verdicts:
            if t0 is None:
                verdict.worst_at = from_start(verdict.worst_at, data)
            if verdict.recovered_within_s is None:
                verdict.recovered_within_s = _recovered_within(data, verdict.name)
        return cls(
            nodeid=nodeid,
            name=name or nodeid.rsplit("::", 1)[-1],
            outcome=outcome,
            duration_s=round(float(duration_s), 3),
            timeline=data,
            slo_verdicts=verdicts,
            actions=(
                actions_from_events(data)
                if actions is None
                else [_action(a, nodeid) for a in actions]
            ),
            pages_sent=pages_from_events(data) if pages_sent is None else int(pages_sent),
            target=target,
            probe_path=probe_path,
            mode=mode,
            twin=twin,
            expected_failure=expected_failure,
        )

    @property
    def is_baseline(self) -> bool:
        return self.mode == "baseline"

    @property
    def journal(self) -> ExperimentJournal | None:
        """A Chaos Toolkit experiment's journal as its timeline tells it; None for others."""
        from .journal import journal_from_events

        return journal_from_events(self.timeline)


_FIGURE_FIELDS = dataclasses.fields(Figures)


def _action(action: ReportedAction | Mapping[str, Any], nodeid: str) -> ReportedAction:
    if isinstance(action, ReportedAction):
        return action
    return ReportedAction.from_dict(action, source=nodeid)


def actions_from_events(timeline: Mapping[str, Any]) -> list[ReportedAction]:
    """The engine's actions as its events tell them.

    Event contract (engine side): ``ACTION_STARTED`` and ``ACTION_FINISHED`` named after the
    action, with ``strategy``, ``target`` and ``action_id`` in the detail, ``ok`` and
    ``error`` on the finish; ``VERIFIED`` named after the action (or with the same
    ``action_id``) with ``ok`` and optionally ``detail``. Without ``action_id`` a finish
    pairs with the oldest open start of the same name.
    """
    zero = time_zero(timeline)
    records: list[ReportedAction] = []
    open_by_key: dict[Any, list[ReportedAction]] = {}
    last_by_key: dict[Any, ReportedAction] = {}
    for event in timeline.get("events", ()):
        kind, detail = event["kind"], event.get("detail") or {}
        key = detail.get("action_id") or event.get("name", "")
        if kind == ACTION_STARTED:
            record = ReportedAction(
                strategy=str(detail.get("strategy", "")),
                action=event.get("name", ""),
                started_at=seconds_since(event["at"], zero),
                finished_at=None,
                ok=None,
                target=str(detail.get("target", "")),
                dry_run=bool(detail.get("dry_run", False)),
            )
            records.append(record)
            open_by_key.setdefault(key, []).append(record)
            last_by_key[key] = record
        elif kind == ACTION_FINISHED:
            pending = open_by_key.get(key)
            if pending:
                record = pending.pop(0)
            else:  # a finish without a start: keep it, the trail must not lose actions
                record = ReportedAction(
                    strategy=str(detail.get("strategy", "")),
                    action=event.get("name", ""),
                    started_at=None,
                    finished_at=None,
                    ok=None,
                    target=str(detail.get("target", "")),
                )
                records.append(record)
            record.finished_at = seconds_since(event["at"], zero)
            record.ok = bool(detail.get("ok", True))
            record.error = str(detail.get("error") or "")
            record.strategy = record.strategy or str(detail.get("strategy", ""))
            last_by_key[key] = record
        elif kind == VERIFIED and key in last_by_key:
            ok = detail.get("ok", True)
            why = detail.get("detail") or detail.get("error") or ""
            last_by_key[key].verify = "passed" if ok else f"failed: {why}".rstrip(": ")
    return records


def pages_from_events(timeline: Mapping[str, Any]) -> int:
    """ESCALATED events that paged someone (``paged`` false in the detail means no page)."""
    return sum(
        1
        for e in timeline.get("events", ())
        if e["kind"] == ESCALATED and (e.get("detail") or {}).get("paged", True) is not False
    )


def _recovered_within(timeline: Mapping[str, Any], name: str) -> float | None:
    events = [e for e in timeline.get("events", ()) if e.get("name") == name]
    breaches = [e["at"] for e in events if e["kind"] == SLO_BREACHED]
    recoveries = [e["at"] for e in events if e["kind"] == SLO_RECOVERED]
    if not breaches or not recoveries or recoveries[-1] < breaches[-1]:
        return None
    return seconds_since(recoveries[-1], time_zero(timeline))


def _list(data: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list, got {type(value).__name__}", source=source, field=key)
    return value


def _build(cls: type[_D], data: Mapping[str, Any], source: str) -> _D:
    """``cls(**data)`` with a ConfigError naming the field when data is missing or foreign."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {type(data).__name__}", source=source)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown field(s) for {cls.__name__}; expected some of {sorted(known)}",
            source=source,
            field=unknown[0],
        )
    missing = [
        name
        for name, f in known.items()
        if name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{cls.__name__} needs {missing}", source=source, field=missing[0])
    return cls(**data)
