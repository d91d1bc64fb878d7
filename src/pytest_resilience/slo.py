"""Service level objectives over the scenario's recorded series.

An SLO is a signal, a bound and a window. The monitor evaluates each objective at every
new sample of its series (one second of load, or one probe reading) over the trailing
window, marks breaches and recoveries on the timeline as they happen (the built-in
detection path), and the assertions read the same evaluations afterwards, so what the
report shows and what the test asserted are one computation.

Latency over a window is the worst per-second percentile in it: conservative, and exact
for a 1 s window, without shipping every request's latency out of the Locust process.

Probe objectives (``slo.probe``, ``slo.promql``) are polled by a thread of their own that
records each reading into a series named after the SLO; from there they are evaluated like
any other series. ``slo.promql`` reads Prometheus through prometheus-api-client: the
session's managed Prometheus, or ``--prometheus-url``.

Size: over 500 lines, SLOMonitor over 400, because the evaluations, the breach and recovery
marks and the assertions are one computation (above); the PromQL probe could move out.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from .errors import ConfigError, SLOViolation
from .timeline import SLO_BREACHED, SLO_RECOVERED, Sample, Timeline

__all__ = ["Evaluation", "Objective", "SLOMonitor"]

log = logging.getLogger("pytest_resilience.slo")

Signal = Literal["error_rate", "latency", "availability", "probe"]

#: how long a steady-state check waits for a probe's first reading (a PromQL rate needs
#: two scrapes of a series that may only appear with the first request)
FIRST_READING_S = 30.0


@dataclass(frozen=True)
class Objective:
    name: str
    signal: Signal
    bound: float
    window_s: float = 5.0
    percentile: int = 99
    series: str = "load"
    #: probes only: "below" means value <= bound is good
    direction: Literal["below", "above"] = "below"
    #: PromQL objectives: the expression, for messages and the report
    query: str = ""

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ConfigError(f"window_s must be > 0, got {self.window_s!r}", field=self.name)
        if self.signal == "error_rate" and not 0 <= self.bound <= 1:
            raise ConfigError(
                f"error rate bound is a fraction in 0..1 (0.01 = 1%), got {self.bound!r}",
                field=self.name,
            )
        if self.signal == "latency" and self.percentile not in (50, 95, 99):
            raise ConfigError(
                f"latency percentile must be 50, 95 or 99, got {self.percentile!r}", field=self.name
            )

    def describe(self) -> str:
        window = f"over {self.window_s:g} s"
        if self.signal == "error_rate":
            return f"error rate <= {self.bound:.2%} {window}"
        if self.signal == "latency":
            return f"p{self.percentile} latency <= {self.bound:g} ms {window}"
        if self.signal == "availability":
            return f"availability >= {self.bound:.2%} {window}"
        op = "<=" if self.direction == "below" else ">="
        where = f" (PromQL {self.query})" if self.query else ""
        return f"{self.series}{where} {op} {self.bound:g} {window}"

    def evaluate(self, window: Sequence[Sample]) -> float | None:
        """The signal's value over one window of samples; ``None`` when there is no data."""
        if not window:
            return None
        if self.signal == "error_rate":
            requests = sum(s.values.get("requests", 0) for s in window)
            failures = sum(s.values.get("failures", 0) for s in window)
            return failures / requests if requests else None
        if self.signal == "latency":
            key = f"p{self.percentile}"
            values = [s.values[key] for s in window if s.values.get("requests") and key in s.values]
            return max(values) if values else None
        if self.signal == "availability":
            asked = [s for s in window if _users_asked(s)]
            if not asked:
                return None  # nobody asked: no data, not downtime
            up = sum(1 for s in asked if s.values.get("requests", 0) > s.values.get("failures", 0))
            return up / len(asked)
        values = [s.values["value"] for s in window if s.values.get("value") is not None]
        return values[-1] if values else None

    def holds(self, value: float) -> bool:
        if self.signal == "availability" or (self.signal == "probe" and self.direction == "above"):
            return value >= self.bound
        return value <= self.bound

    def format(self, value: float) -> str:
        if self.signal in ("error_rate", "availability"):
            return f"{value:.2%}"
        if self.signal == "latency":
            return f"{value:.0f} ms"
        return f"{value:g}"


@dataclass(frozen=True)
class Evaluation:
    at: float
    value: float | None
    held: bool | None  # None: no data in the window


@dataclass
class _State:
    breached: bool = False
    evaluations: list[Evaluation] = field(default_factory=list)


class SLOMonitor:
    """The objectives of one scenario, evaluated live on the timeline's series.

    ``prometheus``: where ``promql`` objectives are read: a base URL, or a factory
    ``(name, expr, **options) -> probe`` (the plugin's, which starts the session's
    monitoring on first use and says clearly when there is no Prometheus).
    """

    def __init__(
        self,
        timeline: Timeline,
        *,
        prometheus: str | Callable[..., ProbeFn] | None = None,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.timeline = timeline
        self.prometheus = prometheus
        self.poll_interval_s = poll_interval_s
        self._objectives: dict[str, Objective] = {}
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._pollers: list[_Poller] = []
        #: probe objectives: seconds assert_holds waits for their first reading
        self._first_reading_s: dict[str, float] = {}
        #: names of the objectives read from Prometheus (the report's probe path)
        self.promql_names: set[str] = set()
        self._unsubscribe = timeline.on_record(self._on_sample)

    # -- declaring objectives -------------------------------------------------------------

    def error_rate(
        self, *, below: float, window_s: float = 5.0, name: str | None = None
    ) -> Objective:
        return self.add(Objective(name or "error_rate", "error_rate", below, window_s))

    def latency(
        self,
        *,
        below_ms: float,
        percentile: int = 99,
        window_s: float = 5.0,
        name: str | None = None,
    ) -> Objective:
        return self.add(
            Objective(name or f"p{percentile}_latency", "latency", below_ms, window_s, percentile)
        )

    def availability(
        self, *, above: float, window_s: float = 10.0, name: str | None = None
    ) -> Objective:
        return self.add(Objective(name or "availability", "availability", above, window_s))

    def probe(
        self,
        name: str,
        probe: ProbeFn,
        *,
        below: float | None = None,
        above: float | None = None,
        window_s: float = 5.0,
        interval_s: float | None = None,
        query: str = "",
        first_reading_s: float = FIRST_READING_S,
    ) -> Objective:
        """An SLO on any probe (a callable giving a number, or None for no data).

        The probe is read once now (so a broken one fails here, naming the SLO), then
        polled every ``interval_s`` into the timeline series ``name``. A probe may have
        nothing to say yet (a PromQL rate before its second scrape): ``assert_holds``
        waits up to ``first_reading_s`` for its first reading before it calls that no data.
        """
        if not first_reading_s >= 0:
            raise ConfigError(
                f"first_reading_s must be >= 0 seconds, got {first_reading_s!r}",
                source=f"SLO {name!r}",
                field="first_reading_s",
            )
        if (below is None) == (above is None):
            raise ConfigError(
                f"give exactly one of below= or above= (got below={below!r}, above={above!r})",
                source=f"SLO {name!r}",
                field="below",
            )
        direction: Literal["below", "above"]
        bound, direction = (below, "below") if below is not None else (above, "above")
        assert bound is not None
        objective = Objective(
            name, "probe", float(bound), window_s, series=name, direction=direction, query=query
        )
        first = probe()  # raises: the SLO is broken, say so before the scenario starts
        self.add(objective)
        with self._lock:
            self._first_reading_s[name] = float(first_reading_s)
        if first is not None:
            self.timeline.record(name, {"value": float(first)})
        poller = _Poller(name, probe, self.timeline, interval_s or self.poll_interval_s)
        self._pollers.append(poller)
        poller.start()
        return objective

    def promql(
        self,
        name: str,
        expr: str | None = None,
        *,
        below: float | None = None,
        above: float | None = None,
        window_s: float = 5.0,
        range_s: float | None = None,
        interval_s: float | None = None,
        first_reading_s: float = FIRST_READING_S,
    ) -> Objective:
        """An SLO on a PromQL expression, evaluated against the run's Prometheus.

        ``expr`` defaults to the demo's PromQL form of ``name`` (error_rate, latency_p99,
        pool_use, cache_hit_ratio, memory_share, disk_use). Instant by default; with
        ``range_s`` each reading is the worst point of a range query over the last
        ``range_s`` seconds (max for ``below``, min for ``above``). An expression the
        server rejects fails here with the server's message and the SLO's name; an
        unreachable Prometheus fails here too, within the probe's timeout. Until the
        expression has a value (a rate needs two scrapes), ``assert_holds`` waits up to
        ``first_reading_s`` for it.
        """
        if expr is None:
            from .prometheus import DEMO_SLOS

            if name not in DEMO_SLOS:
                raise ConfigError(
                    f"no expression given and {name!r} is not one of the demo's PromQL SLOs "
                    f"{sorted(DEMO_SLOS)}",
                    source=f"SLO {name!r}",
                    field="expr",
                )
            expr = DEMO_SLOS[name]
        options: dict[str, Any] = {}
        if range_s is not None:
            options = {
                "kind": "range",
                "window_s": range_s,
                "reduce": "max" if above is None else "min",
            }
        if self.prometheus is None:
            raise ConfigError(
                f"PromQL SLO {name!r} needs a Prometheus: give --prometheus-url",
                source=f"SLO {name!r}",
                field="prometheus_url",
            )
        if isinstance(self.prometheus, str):
            from .prometheus import PromQLProbe

            probe: ProbeFn = PromQLProbe(name, expr, url=self.prometheus, **options)
        else:
            probe = self.prometheus(name, expr, **options)
        self.promql_names.add(name)
        return self.probe(
            name,
            probe,
            below=below,
            above=above,
            window_s=window_s,
            interval_s=interval_s,
            query=expr,
            first_reading_s=first_reading_s,
        )

    def add(self, objective: Objective) -> Objective:
        with self._lock:
            if objective.name in self._objectives:
                raise ConfigError(f"an SLO named {objective.name!r} is already declared")
            self._objectives[objective.name] = objective
            self._states[objective.name] = _State()
        for sample in self.timeline.series(objective.series):
            self._evaluate(objective, sample.at)
        return objective

    @property
    def objectives(self) -> list[Objective]:
        with self._lock:
            return list(self._objectives.values())

    def close(self) -> None:
        for poller in self._pollers:
            poller.stop()
        self._pollers.clear()
        self._unsubscribe()

    # -- evaluation -----------------------------------------------------------------------

    def _on_sample(self, series: str, sample: Sample) -> None:
        for objective in self.objectives:
            if objective.series == series:
                self._evaluate(objective, sample.at)

    def _evaluate(self, objective: Objective, at: float) -> Evaluation:
        window = [
            s
            for s in self.timeline.series(objective.series)
            if at - objective.window_s < s.at <= at
        ]
        value = objective.evaluate(window)
        evaluation = Evaluation(at, value, None if value is None else objective.holds(value))
        with self._lock:
            state = self._states[objective.name]
            state.evaluations.append(evaluation)
            transition = None
            if evaluation.held is False and not state.breached:
                state.breached, transition = True, SLO_BREACHED
            elif evaluation.held and state.breached:
                state.breached, transition = False, SLO_RECOVERED
        if transition:
            self.timeline.mark(
                transition,
                objective.name,
                at=at,
                objective=objective.describe(),
                value=value,
            )
        return evaluation

    def evaluations(
        self, objective: Objective | str, *, since: float | None = None, until: float | None = None
    ) -> list[Evaluation]:
        name = objective if isinstance(objective, str) else objective.name
        with self._lock:
            if name not in self._states:
                raise ConfigError(f"no SLO named {name!r}; declared: {sorted(self._states)}")
            found = list(self._states[name].evaluations)
        return [
            e
            for e in sorted(found, key=lambda e: e.at)
            if (since is None or e.at >= since) and (until is None or e.at <= until)
        ]

    def verdicts(self) -> list[dict[str, object]]:
        """Per objective: did it hold, the worst value and when (for the report).

        An objective held only if it was judged at least once and never broke; one with no
        data at all did not hold (``worst_value`` None says why).
        """
        t0 = self.timeline.t0
        out: list[dict[str, object]] = []
        for objective in self.objectives:
            evaluations = self.evaluations(objective)
            failing = [e for e in evaluations if e.held is False]
            judged = any(e.held is not None for e in evaluations)
            worst = _worst(objective, evaluations)
            out.append(
                {
                    "name": objective.name,
                    "objective": objective.describe(),
                    # no data is not "held": nothing showed the objective was met
                    "held": judged and not failing,
                    "worst_value": worst.value if worst else None,
                    "worst_at": _rel(worst.at, t0) if worst else None,
                    "breached_s": round(_breached_seconds(evaluations), 3),
                }
            )
        return out

    # -- assertions -----------------------------------------------------------------------

    def assert_holds(
        self,
        *objectives: Objective | str,
        since: float | None = None,
        until: float | None = None,
    ) -> None:
        """Fail if any evaluation in [since, until] broke its objective.

        A probe objective with no reading in the range yet (a steady-state check right
        after load started) is waited for, up to its ``first_reading_s``.
        """
        chosen = self._resolve(objectives)
        waited = self._wait_first_readings(chosen, since=since, until=until)
        for objective in chosen:
            evaluations = self.evaluations(objective, since=since, until=until)
            if not _judged(evaluations):
                if objective.signal != "probe":
                    hint = "is load running (the `load` fixture) for this scenario?"
                elif objective.name in waited:
                    hint = (
                        f"its probe gave no reading within {waited[objective.name]:g} s of "
                        "waiting for the first one"
                        + (
                            " (does the expression match any series yet?)"
                            if objective.query
                            else ""
                        )
                    )
                else:
                    hint = "its probe gave no reading in that time"
                raise SLOViolation(
                    f"SLO {objective.name!r} ({objective.describe()}): no data to judge; {hint}"
                )
            failing = [e for e in evaluations if e.held is False]
            if failing:
                worst = _worst(objective, failing)
                assert worst is not None and worst.value is not None
                raise SLOViolation(
                    f"SLO {objective.name!r} ({objective.describe()}) did not hold: worst "
                    f"{objective.format(worst.value)} at {self._when(worst.at)}; "
                    f"{len(failing)} of {len(evaluations)} evaluations failed, first at "
                    f"{self._when(failing[0].at)}"
                )

    def assert_recovers(
        self,
        *objectives: Objective | str,
        within_s: float,
        since: float | None = None,
        stable_s: float | None = None,
    ) -> float:
        """Wait until every objective holds again and keeps holding; return seconds from T0.

        Recovery is the first evaluation from which the objective held through the end;
        it must come within ``within_s`` of ``since`` (default T0, the first fault), and
        hold for ``stable_s`` (default: the longest window) to count.
        """
        chosen = self._resolve(objectives)
        start = since if since is not None else self.timeline.t0
        if start is None:
            raise SLOViolation(
                "assert_recovers: no fault was injected, so there is nothing to recover from"
            )
        stable = stable_s if stable_s is not None else max(o.window_s for o in chosen)
        deadline_at = start + within_s

        def recovered() -> bool:
            return all(self._recovered_at(o, start, stable) is not None for o in chosen)

        self.timeline.wait_for(
            recovered, timeout=max(0.0, deadline_at + stable - self.timeline.now()) + 1.0
        )
        slowest = 0.0
        for objective in chosen:
            at = self._recovered_at(objective, start, stable)
            evaluations = self.evaluations(objective, since=start)
            if at is None or at > deadline_at:
                failing = [e for e in evaluations if e.held is False]
                worst = _worst(objective, failing)
                detail = (
                    f"worst {objective.format(worst.value)} at {self._when(worst.at)}, "
                    f"last failing at {self._when(failing[-1].at)}"
                    if worst and worst.value is not None
                    else "no data after the fault"
                )
                when = "never" if at is None else f"only at {self._when(at)}"
                raise SLOViolation(
                    f"SLO {objective.name!r} ({objective.describe()}) did not recover within "
                    f"{within_s:g} s (recovered {when}): {detail}"
                )
            slowest = max(slowest, at - start)
        return round(slowest, 3)

    def failed_requests(self, *, since: float | None = None, series: str = "load") -> int:
        return int(
            sum(
                s.values.get("failures", 0)
                for s in self.timeline.series(series)
                if since is None or s.at >= since
            )
        )

    def assert_failures_within(self, budget: int, *, since: float | None = None) -> int:
        """Fail if more than ``budget`` requests failed since ``since`` (default T0)."""
        start = since if since is not None else self.timeline.t0
        failed = self.failed_requests(since=start)
        if failed > budget:
            raise SLOViolation(
                f"{failed} requests failed since {self._when(start) if start else 'the start'}; "
                f"the error budget for this scenario is {budget}"
            )
        return failed

    # -- internals ------------------------------------------------------------------------

    def _wait_first_readings(
        self, chosen: Sequence[Objective], *, since: float | None, until: float | None
    ) -> dict[str, float]:
        """Wait for each unread probe objective's first reading; return name -> seconds waited.

        Judging a range that has already ended waits for nothing: no later reading lands in it.
        """
        if until is not None and until < self.timeline.now():
            return {}
        with self._lock:
            bounds = {
                o.name: self._first_reading_s[o.name]
                for o in chosen
                if o.name in self._first_reading_s
            }
        unread = [
            name for name in bounds if not _judged(self.evaluations(name, since=since, until=until))
        ]
        if not unread:
            return {}
        started = time.monotonic()
        for name in sorted(unread, key=bounds.__getitem__):  # each up to its own bound

            def judged(name: str = name) -> bool:
                return _judged(self.evaluations(name, since=since, until=until))

            self.timeline.wait_for(
                judged, timeout=max(0.0, started + bounds[name] - time.monotonic())
            )
        return {name: bounds[name] for name in unread}

    def _recovered_at(self, objective: Objective, start: float, stable: float) -> float | None:
        evaluations = [e for e in self.evaluations(objective, since=start) if e.held is not None]
        if not evaluations or not evaluations[-1].held:
            return None
        first_good = evaluations[-1].at
        for e in reversed(evaluations):
            if not e.held:
                break
            first_good = e.at
        if evaluations[-1].at - first_good < stable:
            return None
        return first_good

    def _resolve(self, objectives: Sequence[Objective | str]) -> list[Objective]:
        names = [o if isinstance(o, str) else o.name for o in objectives]
        with self._lock:
            if not self._objectives:
                raise ConfigError(
                    "no SLO declared: declare one with slo.error_rate(...), slo.latency(...) "
                    "or slo.availability(...)"
                )
            unknown = [n for n in names if n not in self._objectives]
            if unknown:
                raise ConfigError(f"unknown SLO(s) {unknown}; declared: {sorted(self._objectives)}")
            return (
                [self._objectives[n] for n in names] if names else list(self._objectives.values())
            )

    def _when(self, at: float) -> str:
        t0 = self.timeline.t0
        if t0 is None:
            return f"{at - self.timeline.started_at:+.1f} s from start"
        return f"T0{at - t0:+.1f} s"


def _users_asked(sample: Sample) -> bool:
    """Did users ask anything in this second of load? Only such seconds judge availability.

    The load's stats count requests when they complete. A second with completed requests
    was asked. A second with none is asked only if users were running and the service had
    answered before: then requests were on their way and none came back (a hang is
    downtime). Before the first answer (Locust still spawning, the first requests still in
    flight) or with no user running, nobody was waiting on the service: no data.
    """
    requests = sample.values.get("requests", 0)
    if requests > 0:
        return True
    answered_before = sample.values.get("total_requests", 0) - requests > 0
    return sample.values.get("users", 0) > 0 and answered_before


def _judged(evaluations: Sequence[Evaluation]) -> bool:
    return any(e.held is not None for e in evaluations)


def _worst(objective: Objective, evaluations: Sequence[Evaluation]) -> Evaluation | None:
    scored = [e for e in evaluations if e.value is not None]
    if not scored:
        return None
    higher_is_better = objective.holds(float("inf")) and not objective.holds(float("-inf"))
    pick = min if higher_is_better else max
    return pick(scored, key=lambda e: cast(float, e.value))  # scored: each has a value


def _breached_seconds(evaluations: Sequence[Evaluation]) -> float:
    total = 0.0
    for before, after in itertools.pairwise(evaluations):
        if before.held is False:
            total += after.at - before.at
    return total


def _rel(at: float, t0: float | None) -> float:
    return round(at - t0, 3) if t0 is not None else at


ProbeFn = Callable[[], float | None]


class _Poller:
    """Reads one probe every ``interval_s`` into the timeline series ``name``.

    A reading that raises (the server went away mid-scenario) is logged once and counts
    as no data: the SLO then has a gap, which the assertions report as such.
    """

    def __init__(self, name: str, probe: ProbeFn, timeline: Timeline, interval_s: float) -> None:
        self.name = name
        self.probe = probe
        self.timeline = timeline
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slo-{name}", daemon=True)
        self._warned = False

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                value = self.probe()
            except Exception as exc:
                if not self._warned:
                    log.warning("SLO %r: probe failed: %s", self.name, exc)
                    self._warned = True
                continue
            if value is not None:
                self.timeline.record(self.name, {"value": float(value)})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        close = getattr(self.probe, "close", None)
        if callable(close):
            close()
