"""A Chaos Toolkit experiment's journal, as the scenario's timeline tells it.

chaostoolkit/run.py marks an ``experiment_activity`` event per activity run (and
``experiment_ended``); the report reads them back into the journal chaoslib would have
written: each activity's status, output excerpt and times in s from T0, and for a run that
recorded no end, what the timeline says of it (interrupted, aborted, unfinished). The
report does not import the experiment runner, so the event names are repeated here.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .origin import seconds_since, time_zero

__all__ = ["EXCERPT_CHARS", "ExperimentJournal", "JournalRun", "journal_from_events"]


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
    zero = time_zero(timeline)
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
                started_at=seconds_since(event["at"], zero) if state == "started" else None,
                ended_at=None,
                status="unfinished",
                native=str(detail.get("native") or ""),
            )
            runs.append(run)
            open_runs.setdefault(key, []).append(run)
        if state == "ended":
            run = open_runs[key].pop(0)
            run.ended_at = seconds_since(event["at"], zero)
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
                    ended_at=seconds_since(event["at"], zero),
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
