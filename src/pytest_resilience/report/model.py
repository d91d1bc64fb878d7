"""What one chaos test leaves for the report: its outcome, timeline, SLO verdicts and actions.

A :class:`ScenarioResult` is plain data (``to_dict``/``from_dict`` round-trip through JSON),
so the standalone report can be rebuilt from the JSON twin and the history directory holds
nothing but JSON. Every time in it is in seconds from T0 (the first fault), like
:meth:`Timeline.figures`, except ``timeline`` itself, which is ``Timeline.to_dict()``
verbatim (wall-clock times) so a figure can always be traced back to its events.
A scenario that never injected a fault has no T0: its times count from the scenario's
start instead (:attr:`ScenarioResult.time_origin` says which), never wall-clock epochs.
A Chaos Toolkit experiment's journal (:attr:`ScenarioResult.journal`) is read from the
timeline's ``experiment_activity`` events in the same way, so it needs no field of its own.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import re
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

#: a dataclass that _build makes from a mapping
_D = TypeVar("_D", bound="DataclassInstance")

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MODES",
    "OUTCOMES",
    "PROBE_PATHS",
    "ActionRecord",
    "ExperimentJournal",
    "JournalRun",
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
class ActionRecord:
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
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "action") -> ActionRecord:
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
    actions: list[ActionRecord] = field(default_factory=list)
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
        return t0 if t0 is not None else _started_at(self.timeline)

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
            ActionRecord.from_dict(a, source=where) for a in _list(data, "actions", where)
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
        actions: Iterable[ActionRecord | Mapping[str, Any]] | None = None,
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
                verdict.worst_at = _from_start(verdict.worst_at, data)
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
                else [
                    a if isinstance(a, ActionRecord) else ActionRecord.from_dict(a, source=nodeid)
                    for a in actions
                ]
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
        return journal_from_events(self.timeline)


_FIGURE_FIELDS = dataclasses.fields(Figures)


def actions_from_events(timeline: Mapping[str, Any]) -> list[ActionRecord]:
    """The engine's actions as its events tell them.

    Event contract (engine side): ``ACTION_STARTED`` and ``ACTION_FINISHED`` named after the
    action, with ``strategy``, ``target`` and ``action_id`` in the detail, ``ok`` and
    ``error`` on the finish; ``VERIFIED`` named after the action (or with the same
    ``action_id``) with ``ok`` and optionally ``detail``. Without ``action_id`` a finish
    pairs with the oldest open start of the same name.
    """
    zero = _zero(timeline)
    records: list[ActionRecord] = []
    open_by_key: dict[Any, list[ActionRecord]] = {}
    last_by_key: dict[Any, ActionRecord] = {}
    for event in timeline.get("events", ()):
        kind, detail = event["kind"], event.get("detail") or {}
        key = detail.get("action_id") or event.get("name", "")
        if kind == ACTION_STARTED:
            record = ActionRecord(
                strategy=str(detail.get("strategy", "")),
                action=event.get("name", ""),
                started_at=_rel(event["at"], zero),
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
                record = ActionRecord(
                    strategy=str(detail.get("strategy", "")),
                    action=event.get("name", ""),
                    started_at=None,
                    finished_at=None,
                    ok=None,
                    target=str(detail.get("target", "")),
                )
                records.append(record)
            record.finished_at = _rel(event["at"], zero)
            record.ok = bool(detail.get("ok", True))
            record.error = str(detail.get("error") or "")
            record.strategy = record.strategy or str(detail.get("strategy", ""))
            last_by_key[key] = record
        elif kind == VERIFIED and key in last_by_key:
            ok = detail.get("ok", True)
            why = detail.get("detail") or detail.get("error") or ""
            last_by_key[key].verify = "passed" if ok else f"failed: {why}".rstrip(": ")
    return records


# The events ``chaostoolkit/run.py`` marks (ACTIVITY, EXPERIMENT_ENDED there); named here so
# that the report does not import the experiment runner.
EXPERIMENT_ACTIVITY = "experiment_activity"
EXPERIMENT_ENDED = "experiment_ended"
#: an output or error excerpt in the journal table: enough to recognise it, not a log
EXCERPT_CHARS = 200


@dataclass
class JournalRun:
    """One run of an activity in an experiment's journal; times in s from T0 (or the start).

    ``status`` is the journal's ("succeeded", "failed"), or what the timeline says of a run
    that recorded no end: "interrupted" / "aborted" (the experiment ended so), "failed" (a
    rollback that raised: the next one started), "unfinished" (nothing says more);
    "dry run" when nothing ran, "not started (dry run)" for the extension's load.
    """

    phase: str
    activity: str
    type: str
    started_at: float | None
    ended_at: float | None
    status: str
    #: whether the probe's output was within its tolerance; None where none was judged
    tolerance_met: bool | None = None
    #: the error, else the output, at most EXCERPT_CHARS long
    excerpt: str = ""
    #: what ran in place of the extension's function (``--chaostoolkit-native``)
    native: str = ""

    @property
    def is_rollback(self) -> bool:
        return self.phase == "rollback"


@dataclass
class ExperimentJournal:
    """The runs of one experiment in order, and its verdict (None when no end was recorded:
    a failed rollback raises before the runner marks it)."""

    title: str
    verdict: str | None
    runs: list[JournalRun] = field(default_factory=list)

    @property
    def rollbacks(self) -> list[JournalRun]:
        return [run for run in self.runs if run.is_rollback]

    @property
    def rollbacks_line(self) -> str:
        """``2 ran: 1 succeeded, 1 failed``, or ``none ran``: how the rollbacks ended."""
        rollbacks = self.rollbacks
        if not rollbacks:
            return "none ran"
        counts: dict[str, int] = {}
        for run in rollbacks:
            counts[run.status] = counts.get(run.status, 0) + 1
        ended = ", ".join(f"{n} {status}" for status, n in counts.items())
        return f"{len(rollbacks)} ran: {ended}"


def journal_from_events(timeline: Mapping[str, Any]) -> ExperimentJournal | None:
    """The experiment's runs from its ``experiment_activity`` events, None without any.

    A ``started`` event pairs with the next ``ended`` of the same phase and name, a
    ``judged`` one with the last run of them (or is a run of its own: our SLOs).
    """
    zero = _zero(timeline)
    events = list(timeline.get("events", ()))
    if not any(e["kind"] == EXPERIMENT_ACTIVITY for e in events):
        return None
    ended = next((e for e in events if e["kind"] == EXPERIMENT_ENDED), None)
    end_detail = (ended or {}).get("detail") or {}
    runs: list[JournalRun] = []
    open_runs: dict[tuple[str, str], list[JournalRun]] = {}
    last: dict[tuple[str, str], JournalRun] = {}
    for event in events:
        if event["kind"] != EXPERIMENT_ACTIVITY:
            continue
        detail = event.get("detail") or {}
        key = (str(detail.get("phase", "")), str(event.get("name", "")))
        state = str(detail.get("state", ""))
        if state in ("started", "ended") and (state == "started" or not open_runs.get(key)):
            run = JournalRun(
                phase=key[0],
                activity=key[1],
                type=str(detail.get("type", "")),
                started_at=_rel(event["at"], zero) if state == "started" else None,
                ended_at=None,
                status="unfinished",
                native=str(detail.get("native") or ""),
            )
            runs.append(run)
            open_runs.setdefault(key, []).append(run)
        if state == "ended":
            run = open_runs[key].pop(0)
            run.ended_at = _rel(event["at"], zero)
            run.status = "dry run" if detail.get("dry_run") else str(detail.get("status", ""))
            run.excerpt = _excerpt(detail.get("error") or detail.get("output"))
            last[key] = run
        elif state == "judged":
            judged = last.get(key)
            if judged is None or judged.tolerance_met is not None:  # our SLOs: judged, not run
                met = detail.get("tolerance_met")
                judged = JournalRun(
                    phase=key[0],
                    activity=key[1],
                    type=str(detail.get("type", "")),
                    started_at=None,
                    ended_at=_rel(event["at"], zero),
                    status="succeeded" if met else "failed",
                    excerpt=_excerpt(detail.get("error")),
                )
                runs.append(judged)
            judged.tolerance_met = detail.get("tolerance_met")
        elif state not in ("started", "ended"):  # "not started (dry run)", the extension's
            runs.append(JournalRun(key[0], key[1], str(detail.get("type", "")), None, None, state))
    _settle_unended(runs, end_detail)
    title = str((ended or {}).get("name") or _started_title(events))
    verdict = end_detail.get("verdict")
    return ExperimentJournal(title, None if verdict is None else str(verdict), runs)


_ROLLBACK_LINE = re.compile(r"^rollback \S+ .*?: (?P<status>\w+)(?: \((?P<error>.*)\))?$", re.S)


def _settle_unended(runs: list[JournalRun], end_detail: Mapping[str, Any]) -> None:
    """What a run without an ``ended`` event came to, as far as the timeline tells.

    Such a run raised (the runner marks no end then) or was interrupted. The experiment's
    end names each rollback's outcome; without it, a rollback followed by another raised
    (``play_rollbacks`` goes on only after an error), and the method's status is the
    experiment's (interrupted, aborted) when that is known.
    """
    lines = [str(line) for line in end_detail.get("rollbacks") or ()]
    rollbacks = [run for run in runs if run.is_rollback]
    for i, run in enumerate(rollbacks):
        if run.status != "unfinished":
            continue
        told = _ROLLBACK_LINE.match(lines[i]) if len(lines) == len(rollbacks) else None
        if told:
            run.status = told["status"]
            run.excerpt = _excerpt(told["error"])
        elif i + 1 < len(rollbacks):
            run.status = "failed"
            run.excerpt = "raised before its end was recorded (the test's error says why)"
    experiment_status = str(end_detail.get("status", ""))
    for run in runs:
        unended = run.status == "unfinished" and not run.is_rollback
        if unended and experiment_status in ("interrupted", "aborted"):
            run.status = experiment_status


def _started_title(events: Iterable[Mapping[str, Any]]) -> str:
    return next((str(e.get("name", "")) for e in events if e["kind"] == "experiment_started"), "")


_CUT_PROCESS_REPR = re.compile(r"^\{'status': (?P<status>-?\d+), 'stdout': [\"'](?P<rest>.*)", re.S)


def _excerpt(value: Any) -> str:
    """A short line for the table: a process's exit code and streams, an HTTP status and
    body, else the text itself; at most :data:`EXCERPT_CHARS` characters."""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and value[:1] == "{":
        # the runner gives a provider's output as its repr, cut at 2000 characters
        with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
            value = ast.literal_eval(value)
        cut = _CUT_PROCESS_REPR.match(value) if isinstance(value, str) else None
        if cut:
            value = f"exit {cut['status']}; stdout: {cut['rest']}"
    if isinstance(value, Mapping) and "status" in value and ({"stdout", "stderr"} & set(value)):
        parts = [f"exit {value['status']}"]
        parts += [f"{k}: {str(value[k]).strip()}" for k in ("stdout", "stderr") if value.get(k)]
        text = "; ".join(parts)
    elif isinstance(value, Mapping) and "status" in value and "body" in value:
        text = f"HTTP {value['status']}: {value['body']}"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


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
    return _rel(recoveries[-1], _zero(timeline))


def _rel(at: float, zero: float) -> float:
    return round(at - zero, 3)


def _started_at(timeline: Mapping[str, Any]) -> float:
    return float(timeline.get("started_at") or 0.0)


def _zero(timeline: Mapping[str, Any]) -> float:
    t0 = timeline.get("t0")
    return float(t0) if t0 is not None else _started_at(timeline)


def _from_start(at: float | None, timeline: Mapping[str, Any]) -> float | None:
    """A time that ``SLOMonitor.verdicts()`` gave as wall clock (it does without a T0).

    Only a time at or after the timeline's start is wall clock: one already counted from
    the start is seconds, far below any epoch, and stays as it is.
    """
    started = _started_at(timeline)
    if at is None or at < started or not started:
        return at
    return _rel(at, started)


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
