"""The events and series of one scenario, and the MTTR arithmetic over them.

The report and every assertion read the timeline and nothing else, so a figure in the
report can always be traced back to the events it came from. Times are wall-clock
seconds (``time.time()``), because events arrive from other processes (Locust, the
platform, Alertmanager) whose monotonic clocks we cannot share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .targets.base import TargetEvent

__all__ = ["Event", "Figures", "Sample", "Timeline"]

# Event kinds; plain strings so other rooms (engine, targets) can add their own.
STEADY_STATE = "steady_state"
FAULT_INJECTED = "fault_injected"
FAULT_REVERTED = "fault_reverted"
SLO_BREACHED = "slo_breached"
SLO_RECOVERED = "slo_recovered"
ALERT_FIRED = "alert_fired"
ALERT_RESOLVED = "alert_resolved"
ACTION_STARTED = "action_started"
ACTION_FINISHED = "action_finished"
VERIFIED = "verified"
ESCALATED = "escalated"
POD_DIED = "pod_died"
POD_FAILED_TO_START = "pod_failed_to_start"
POD_READY = "pod_ready"
POD_STARTED = "pod_started"
LOAD_STARTED = "load_started"
LOAD_STOPPED = "load_stopped"
PHASE = "phase"
#: ``slo.assert_recovers(within_s=...)`` was called: the scenario's recovery window
RECOVERY_WINDOW = "recovery_window"
#: a baseline run (engine observing only) raised what is expected without automation
BASELINE_EXPECTED = "baseline_expected"


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    name: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One interval of a series, e.g. one second of load: ``values`` by metric name."""

    at: float
    values: dict[str, float]


@dataclass(frozen=True)
class Figures:
    """Seconds from the first fault (T0); ``None`` where the event never happened."""

    time_to_detect: float | None
    time_to_mitigate: float | None
    time_to_recover: float | None
    healed_by: str | None


class Timeline:
    """Thread-safe: the load reader, the platform's event thread and the engine all write."""

    def __init__(self, scenario: str = "", *, clock: Callable[[], float] = time.time) -> None:
        self.scenario = scenario
        self._clock = clock
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._series: dict[str, list[Sample]] = {}
        self._changed = threading.Condition()  # its own lock: predicates take self._lock
        self._listeners: list[Callable[[str, Sample], None]] = []
        self._watchers: list[Callable[[Event], None]] = []
        self.started_at = clock()

    def now(self) -> float:
        return self._clock()

    def mark(self, kind: str, name: str = "", *, at: float | None = None, **detail: Any) -> Event:
        event = Event(at=self._clock() if at is None else at, kind=kind, name=name, detail=detail)
        with self._lock:
            self._events.append(event)
            watchers = list(self._watchers)
        self._notify()
        for watcher in watchers:
            watcher(event)
        return event

    def mark_target_event(self, event: TargetEvent) -> None:
        """The target's event as the report reads it: its kind, named after the pod, else
        the node, else the workload it concerns; subscribe it to a target
        (``target.subscribe(timeline.mark_target_event)``)."""
        self.mark(
            str(event.kind),
            event.pod or event.node or event.workload or "",
            at=event.at,
            workload=event.workload,
            node=event.node,
            restarts=event.restarts,
            detail=event.detail,
        )

    def record(self, series: str, values: dict[str, float], *, at: float | None = None) -> Sample:
        sample = Sample(at=self._clock() if at is None else at, values=dict(values))
        with self._lock:
            self._series.setdefault(series, []).append(sample)
            listeners = list(self._listeners)
        self._notify()
        for listener in listeners:
            listener(series, sample)
        return sample

    def on_record(self, listener: Callable[[str, Sample], None]) -> Callable[[], None]:
        """Call ``listener`` for each new sample (the SLO monitor evaluates live this way)."""
        return self._subscribe(self._listeners, listener)

    def on_mark(self, watcher: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``watcher`` for each new event (live phase lines on the console)."""
        return self._subscribe(self._watchers, watcher)

    def _subscribe(self, subscribers: list[Any], subscriber: Any) -> Callable[[], None]:
        with self._lock:
            subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in subscribers:
                    subscribers.remove(subscriber)

        return unsubscribe

    def wait_for(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Block until ``predicate()`` holds, re-checked whenever an event or sample lands."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
            return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def events(self, kind: str | None = None, *, since: float | None = None) -> list[Event]:
        with self._lock:
            found = sorted(self._events, key=lambda e: e.at)
        return [
            e
            for e in found
            if (kind is None or e.kind == kind) and (since is None or e.at >= since)
        ]

    def first(self, *kinds: str, since: float | None = None) -> Event | None:
        candidates = [e for e in self.events(since=since) if e.kind in kinds]
        return candidates[0] if candidates else None

    def series(self, name: str) -> list[Sample]:
        with self._lock:
            return sorted(self._series.get(name, ()), key=lambda s: s.at)

    @property
    def t0(self) -> float | None:
        """When the first fault was injected: the zero of every figure."""
        first = self.first(FAULT_INJECTED)
        return first.at if first else None

    def figures(self) -> Figures:
        """Time to detect, mitigate and recover, in seconds from T0.

        detect: the first alert, or the first SLO breach seen by the monitor if no alert;
        mitigate: the earliest of the first remediation action that finished well, the
        first replacement of a dead pod ready (not one an engine action started), and the
        fault's revert; recover: the last SLO recovery
        (from then on every SLO held). ``healed_by`` names what mitigated.
        """
        t0 = self.t0
        if t0 is None:
            return Figures(None, None, None, None)
        detect = self.first(ALERT_FIRED, since=t0) or self.first(SLO_BREACHED, since=t0)
        action = next(
            (e for e in self.events(ACTION_FINISHED, since=t0) if e.detail.get("ok", True)), None
        )
        # The platform heals when it replaces a pod that died. A pod that became ready
        # while an engine action ran (rollback, drain, scale-up) is the engine's doing, and
        # one the fault itself rolled out (a deploy) before anything died heals nothing.
        busy = self._action_windows(t0)
        death = self.first(POD_DIED, POD_FAILED_TO_START, since=t0)
        platform = next(
            (
                e
                for e in self.events(POD_READY, since=death.at if death else t0)
                if death is not None and not any(start <= e.at <= end for start, end in busy)
            ),
            None,
        )
        reverted = self.first(FAULT_REVERTED, since=t0)
        mitigations = [
            (e.at, who)
            for e, who in ((action, "engine"), (platform, "platform"), (reverted, "fault_end"))
            if e is not None
        ]
        mitigated = min(mitigations) if mitigations else None
        recoveries = self.events(SLO_RECOVERED, since=t0)
        breaches = self.events(SLO_BREACHED, since=t0)
        if breaches:
            recovered = (
                recoveries[-1].at if recoveries and recoveries[-1].at >= breaches[-1].at else None
            )
        else:
            recovered = mitigated[0] if mitigated else None
        return Figures(
            time_to_detect=_since(t0, detect.at if detect else None),
            time_to_mitigate=_since(t0, mitigated[0] if mitigated else None),
            time_to_recover=_since(t0, recovered),
            healed_by=mitigated[1] if mitigated else None,
        )

    def observed_until(self) -> float | None:
        """Until when the faulted system was watched: the first fault revert or load stop
        after T0, else the last event or sample. None without a fault.

        After that moment what the timeline shows is the scenario ending the fault, not the
        system (or the engine) healing it; the with/without comparison stops there.
        """
        t0 = self.t0
        if t0 is None:
            return None
        ends = [
            e.at
            for e in (self.first(FAULT_REVERTED, since=t0), self.first(LOAD_STOPPED, since=t0))
            if e is not None
        ]
        if ends:
            return min(ends)
        with self._lock:
            seen = [e.at for e in self._events]
            seen += [samples[-1].at for samples in self._series.values() if samples]
        return max(seen) if seen else t0

    def _action_windows(self, t0: float) -> list[tuple[float, float]]:
        """[started, finished] of each remediation action since t0 (paired by action_id)."""
        starts = {
            e.detail.get("action_id"): e.at
            for e in self.events(ACTION_STARTED, since=t0)
            if e.detail.get("action_id")
        }
        ends = {
            e.detail.get("action_id"): e.at
            for e in self.events(ACTION_FINISHED, since=t0)
            if e.detail.get("action_id")
        }
        return [(at, ends.get(key, float("inf"))) for key, at in starts.items()]

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            events = [asdict(e) for e in sorted(self._events, key=lambda e: e.at)]
            series = {
                name: [asdict(s) for s in sorted(samples, key=lambda s: s.at)]
                for name, samples in self._series.items()
            }
        return {
            "scenario": self.scenario,
            "started_at": self.started_at,
            "t0": self.t0,
            "figures": asdict(self.figures()),
            "events": events,
            "series": series,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        timeline = cls(data.get("scenario", ""))
        timeline.started_at = data.get("started_at", timeline.started_at)
        timeline._events = [Event(**e) for e in data.get("events", ())]
        timeline._series = {
            name: [Sample(**s) for s in samples] for name, samples in data.get("series", {}).items()
        }
        return timeline


def _since(t0: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, at - t0), 3)
