"""Alerts and the two sources the engine runs itself: probe rules and target events.

An :class:`Alert` is the one shape every source produces (rule evaluator, target events,
the Alertmanager webhook), so the runner never needs to know where an alert came from.
The fingerprint identifies "the same alert" across repeats, the way Alertmanager's does.
"""

from __future__ import annotations

import hashlib
import operator
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..targets.base import EventKind, TargetEvent
from .redaction import LOGGER

__all__ = [
    "FIRING",
    "RESOLVED",
    "Alert",
    "EventAlerts",
    "Probe",
    "Rule",
    "RuleEvaluator",
    "compare",
]

FIRING = "firing"
RESOLVED = "resolved"

Probe = Callable[[], float | None]

# Labels that name what an alert is about, in order of preference.
_TARGET_LABELS = ("target", "workload", "service", "deployment", "app", "job", "node", "pod")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "above": operator.gt,
    "below": operator.lt,
    "at_least": operator.ge,
    "at_most": operator.le,
}


def compare(op: str, value: float, threshold: float) -> bool:
    """``op`` is one of above, below, at_least, at_most (the playbook vocabulary)."""
    return _OPS[op](value, threshold)


def fingerprint_of(name: str, labels: Mapping[str, str]) -> str:
    text = "\x1f".join([name, *(f"{k}={v}" for k, v in sorted(labels.items()))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert, firing or resolved; ``target`` names the workload (or node) it is about."""

    name: str
    target: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    severity: str = "warning"
    status: str = FIRING
    starts_at: float = field(default_factory=time.time)
    ends_at: float | None = None
    fingerprint: str = ""
    value: float | None = None
    source: str = "api"
    received_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.fingerprint:
            labels = {"alertname": self.name, "target": self.target, **self.labels}
            object.__setattr__(self, "fingerprint", fingerprint_of(self.name, labels))

    @property
    def firing(self) -> bool:
        return self.status == FIRING

    @property
    def key(self) -> tuple[str, str]:
        """What cooldown and incident de-duplication are keyed on."""
        return (self.name, self.target)

    def resolved(self, at: float | None = None) -> Alert:
        now = time.time() if at is None else at
        return replace(self, status=RESOLVED, ends_at=now, received_at=time.time())

    @staticmethod
    def target_from_labels(labels: Mapping[str, str]) -> str:
        return next((labels[k] for k in _TARGET_LABELS if labels.get(k)), "")


@dataclass(frozen=True)
class Rule:
    """Fire ``alert`` when ``probe`` stays ``op`` ``threshold`` for ``for_s`` seconds."""

    alert: str
    probe: str
    op: str
    threshold: float
    target: str
    for_s: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)

    def breached(self, value: float) -> bool:
        return compare(self.op, value, self.threshold)


class RuleEvaluator:
    """Evaluates rules over probes on each :meth:`tick`; a probe answering None is "no data".

    No data neither fires nor resolves: a scrape gap must not page anyone or close an
    incident that is still burning.
    """

    def __init__(
        self, rules: list[Rule], probes: Mapping[str, Probe], submit: Callable[[Alert], object]
    ) -> None:
        self.rules = [r for r in rules if r.probe in probes]
        self._probes = probes
        self._submit = submit
        self._pending: dict[int, float] = {}  # rule index -> breached since
        self._firing: dict[int, Alert] = {}

    def rule_for(self, alert: Alert) -> Rule | None:
        return next(
            (r for r in self.rules if r.alert == alert.name and r.target == alert.target), None
        )

    def still_breached(self, alert: Alert) -> bool:
        """Whether ``alert``'s rule breaches *now*; if not, forget it fired, so a new breach
        fires afresh. No data counts as not breached: nothing current to act on."""
        for index, rule in enumerate(self.rules):
            if rule.alert == alert.name and rule.target == alert.target:
                try:
                    value = self._probes[rule.probe]()
                except Exception:
                    value = None
                if value is not None and rule.breached(value):
                    return True
                self._firing.pop(index, None)
                self._pending.pop(index, None)
                return False
        return True  # not one of our rules (a webhook alert): its sender re-sends it

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for index, rule in enumerate(self.rules):
            probe = self._probes[rule.probe]
            try:
                value = probe()
            except Exception as exc:  # a broken probe is no data, not a dead engine
                LOGGER.warning("probe %s failed: %s", rule.probe, exc)
                value = None
            if value is None:
                continue
            if rule.breached(value):
                since = self._pending.setdefault(index, now)
                if index not in self._firing and now - since >= rule.for_s:
                    alert = Alert(
                        name=rule.alert,
                        target=rule.target,
                        labels={**_probe_labels(probe), **rule.labels, "probe": rule.probe},
                        severity=rule.severity,
                        starts_at=since,
                        value=value,
                        source="rule",
                    )
                    self._firing[index] = alert
                    self._submit(alert)
            else:
                self._pending.pop(index, None)
                firing = self._firing.pop(index, None)
                if firing is not None:
                    self._submit(firing.resolved(now))


def _probe_labels(probe: Probe) -> dict[str, str]:
    """Labels a probe gives about its last reading (e.g. ``pod``: the worst pod), if any."""
    labels = getattr(probe, "labels", None)
    if not callable(labels):
        return {}
    try:
        return {str(k): str(v) for k, v in labels().items()}
    except Exception:  # labels are a courtesy; never lose the alert over them
        return {}


class EventAlerts:
    """Turns target events into alerts: a crash loop, a node that is not ready.

    Crash loop = ``restarts`` deaths (or failed starts) of one workload's pods within
    ``window_s``, as kubelet's CrashLoopBackOff would show it.
    """

    _DEATHS = (EventKind.POD_DIED, EventKind.POD_FAILED_TO_START)

    def __init__(
        self, submit: Callable[[Alert], object], *, restarts: int = 3, window_s: float = 60.0
    ) -> None:
        self._submit = submit
        self.restarts = restarts
        self.window_s = window_s
        self._lock = threading.Lock()
        self._deaths: dict[str, deque[float]] = defaultdict(deque)
        self._crashlooping: dict[str, Alert] = {}
        self._nodes_down: dict[str, Alert] = {}

    def __call__(self, event: TargetEvent) -> None:
        alert: Alert | None = None
        with self._lock:
            if event.kind in self._DEATHS and event.workload:
                deaths = self._deaths[event.workload]
                deaths.append(event.at)
                while deaths and event.at - deaths[0] > self.window_s:
                    deaths.popleft()
                if len(deaths) >= self.restarts and event.workload not in self._crashlooping:
                    alert = Alert(
                        name="PodCrashLoop",
                        target=event.workload,
                        labels={"workload": event.workload, "pod": event.pod or ""},
                        annotations={"summary": f"{len(deaths)} restarts in {self.window_s:g}s"},
                        severity="critical",
                        starts_at=deaths[0],
                        value=float(len(deaths)),
                        source="target",
                    )
                    self._crashlooping[event.workload] = alert
            elif event.kind == EventKind.POD_READY and event.workload:
                deaths = self._deaths[event.workload]
                if event.workload in self._crashlooping and (
                    not deaths or event.at - deaths[-1] > self.window_s / 4
                ):
                    alert = self._crashlooping.pop(event.workload).resolved(event.at)
                    deaths.clear()
            elif event.kind == EventKind.NODE_NOT_READY and event.node:
                if event.node not in self._nodes_down:
                    alert = Alert(
                        name="NodeNotReady",
                        target=event.node,
                        labels={"node": event.node},
                        severity="critical",
                        starts_at=event.at,
                        source="target",
                    )
                    self._nodes_down[event.node] = alert
            elif event.kind == EventKind.NODE_READY and event.node in self._nodes_down:
                alert = self._nodes_down.pop(event.node).resolved(event.at)
        if alert is not None:
            self._submit(alert)
