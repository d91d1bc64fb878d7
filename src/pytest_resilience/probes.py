"""Built-in probes for the remediation engine's rule evaluator: what users saw, what pods say.

``error_rate`` reads the scenario timeline's ``load`` series (Locust's per-second stats), so
the engine alerts on the same numbers the SLOs judge. The others scrape each pod's own
``/metrics`` (the local target's private pod port) and reduce over pods the way an alert
rule would: the worst pod for gauges (``max``), rates from counter deltas over a short
trailing window, like PromQL's ``rate()``. A pod that does not answer within the short
timeout is skipped, so a hung pod never stalls detection; no pod answering is "no data"
(``None``), which neither fires nor resolves an alert.

:func:`scenario_rules` are the bundled playbooks' rules with ``for`` durations short enough
for scenarios that last seconds; the fixture ``remediation_rules`` returns them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .engine.alerts import Rule
from .targets.base import Pod, PodMetrics, Target
from .timeline import Timeline

__all__ = ["BuiltinProbes", "LabelledProbe", "PodScrape", "scenario_rules"]

#: counter samples whose per-second rate the probes need (the `_total` sample names)
_COUNTERS = ("demo_cache_hits_total", "demo_cache_misses_total", "process_cpu_seconds_total")


@dataclass(frozen=True)
class PodScrape:
    """One pod's /metrics at one moment: un-labelled samples summed by name."""

    pod: str
    at: float
    values: Mapping[str, float]

    def get(self, *names: str) -> float | None:
        """The first of ``names`` the pod exposes (fallback metric names)."""
        return next((self.values[n] for n in names if n in self.values), None)


@dataclass
class LabelledProbe:
    """A probe callable that also tells which pod its last reading came from.

    The rule evaluator copies ``labels()`` into the alert it raises, so a remediation that
    acts on one pod (GC, drain) acts on the worst one, not on an arbitrary replica.
    """

    fn: Callable[[], tuple[float | None, str | None]]
    name: str
    _last_pod: str | None = field(default=None, init=False)

    def __call__(self) -> float | None:
        value, pod = self.fn()
        self._last_pod = pod
        return value

    def labels(self) -> dict[str, str]:
        return {"pod": self._last_pod} if self._last_pod else {}


class BuiltinProbes:
    """Probes over one workload (``service``) of ``target`` and the scenario ``timeline``.

    Scrapes are shared: every probe called within ``max_age_s`` of the last scrape reads
    that scrape, so a rule tick that evaluates five rules costs one round of HTTP requests.
    """

    def __init__(
        self,
        target: Target,
        timeline: Timeline | None,
        service: str = "api",
        *,
        error_window_s: float = 3.0,
        rate_window_s: float = 2.0,
        max_age_s: float = 0.5,
        http_timeout_s: float = 0.5,
    ) -> None:
        self.target = target
        self.timeline = timeline
        self.service = service
        self.error_window_s = error_window_s
        self.rate_window_s = rate_window_s
        self.max_age_s = max_age_s
        self.http_timeout_s = http_timeout_s
        self._lock = threading.Lock()
        self._last: dict[str, PodScrape] = {}
        self._last_at = 0.0
        self._history: dict[str, deque[PodScrape]] = {}
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="probe-scrape")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- what users saw ----------------------------------------------------------------

    def error_rate(self) -> float | None:
        """Failed / all requests of the load over the last ``error_window_s`` seconds."""
        if self.timeline is None:
            return None
        since = self.timeline.now() - self.error_window_s
        window = [s for s in self.timeline.series("load") if s.at > since]
        requests = sum(s.values.get("requests", 0) for s in window)
        failures = sum(s.values.get("failures", 0) for s in window)
        return failures / requests if requests else None

    # -- what the pods report ----------------------------------------------------------

    def memory_share(self) -> float | None:
        return self._memory()[0]

    def pool_use(self) -> float | None:
        return self._pool_use()[0]

    def pool_max(self) -> float | None:
        values = [s.get("demo_db_pool_max") for s in self.scrape().values()]
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def cache_hit_ratio(self) -> float | None:
        """Hits / (hits + misses) over the trailing rate window, summed over pods."""
        self.scrape()
        hits = self._deltas("demo_cache_hits_total")
        misses = self._deltas("demo_cache_misses_total")
        pods = set(hits) & set(misses)
        total_hits = sum(hits[p][0] for p in pods)
        total = total_hits + sum(misses[p][0] for p in pods)
        return total_hits / total if total > 0 else None

    def cpu_share(self) -> float | None:
        return self._cpu()[0]

    def disk_use(self) -> float | None:
        return _worst({p: s.get("demo_disk_used_ratio") for p, s in self.scrape().items()})[0]

    def as_mapping(self) -> dict[str, Callable[[], float | None]]:
        """Probe name -> callable, as the Engine's ``probes`` argument wants them."""
        return {
            "error_rate": self.error_rate,
            "memory_share": LabelledProbe(self._memory, "memory_share"),
            "pool_use": self.pool_use,  # workload-wide: every pod's pool gets the fix
            "pool_max": self.pool_max,
            "cache_hit_ratio": self.cache_hit_ratio,
            "cpu_share": self.cpu_share,  # workload-wide: capacity is the fix
            "disk_use": self.disk_use,
        }

    # -- scraping ----------------------------------------------------------------------

    def pods(self) -> list[Pod]:
        return [p for p in self.target.pods() if p.workload == self.service]

    def scrape(self) -> dict[str, PodScrape]:
        """Each answering pod's metrics, at most ``max_age_s`` old."""
        with self._lock:
            if time.monotonic() - self._last_at < self.max_age_s:
                return dict(self._last)
            pods = self.pods()
            futures = [(pod, self._pool.submit(self._scrape_pod, pod)) for pod in pods]
            found: dict[str, PodScrape] = {}
            for pod, future in futures:
                scrape = future.result()
                if scrape is not None:
                    found[pod.name] = scrape
                    history = self._history.setdefault(pod.name, deque())
                    history.append(scrape)
                    while len(history) > 1 and scrape.at - history[1].at >= self.rate_window_s:
                        history.popleft()
            live = {p.name for p in pods}
            for gone in set(self._history) - live:
                del self._history[gone]
            self._last, self._last_at = found, time.monotonic()
            return dict(found)

    def _scrape_pod(self, pod: Pod) -> PodScrape | None:
        if not isinstance(self.target, PodMetrics):
            return None
        try:  # a pod that does not answer is skipped, not waited for
            text = self.target.scrape_pod(pod, timeout=self.http_timeout_s)
        except Exception:  # the pod went away between listing and asking
            return None
        if text is None:
            return None
        values: dict[str, float] = {}
        try:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
        except ValueError:
            return None
        return PodScrape(pod.name, time.monotonic(), values)

    def _deltas(self, counter: str) -> dict[str, tuple[float, float]]:
        """Per pod: (counter increase, seconds) across its scrape history (resets handled)."""
        with self._lock:
            histories = {p: list(h) for p, h in self._history.items()}
        out: dict[str, tuple[float, float]] = {}
        for pod, history in histories.items():
            if len(history) < 2:
                continue
            first, last = history[0].get(counter), history[-1].get(counter)
            if first is None or last is None:
                continue
            increase = last - first if last >= first else last  # counter reset: a new process
            out[pod] = (increase, history[-1].at - history[0].at)
        return out

    # -- reductions with the worst pod ---------------------------------------------------

    def _memory(self) -> tuple[float | None, str | None]:
        shares: dict[str, float | None] = {}
        for pod, scrape in self.scrape().items():
            used = scrape.get("demo_memory_usage_bytes", "demo_process_resident_memory_bytes")
            limit = scrape.get("demo_memory_limit_bytes")
            shares[pod] = used / limit if used is not None and limit else None
        return _worst(shares)

    def _pool_use(self) -> tuple[float | None, str | None]:
        uses: dict[str, float | None] = {}
        for pod, scrape in self.scrape().items():
            in_use, size = scrape.get("demo_db_pool_in_use"), scrape.get("demo_db_pool_max")
            uses[pod] = in_use / size if in_use is not None and size else None
        return _worst(uses)

    def _cpu(self) -> tuple[float | None, str | None]:
        self.scrape()
        return _worst(
            {p: inc / secs for p, (inc, secs) in self._deltas(_COUNTERS[2]).items() if secs > 0}
        )


def _worst(values: Mapping[str, float | None]) -> tuple[float | None, str | None]:
    known = {p: v for p, v in values.items() if v is not None}
    if not known:
        return None, None
    pod = max(known, key=lambda p: known[p])
    return known[pod], pod


def scenario_rules(target: str = "api") -> list[Rule]:
    """The bundled playbooks' rules, tuned to scenarios that last seconds, not hours.

    ``for`` is 1-2 s instead of 5-30 s (a scenario must detect within seconds). Two
    thresholds differ from the playbooks, both on purpose: the error rate pages at 2%
    (the demo's bad release fails exactly 5% of requests, which a ``> 5%`` rule would only
    catch by luck), and HighCPU keeps the playbook's 30 s, because on a small shared
    machine a few seconds of busy CPU is noise, not a reason to scale.
    """
    return [
        Rule(
            "ErrorRateHighCritical", "error_rate", "above", 0.02, target, for_s=2.0,
            severity="critical", labels={"error_type": "5xx"},
        ),
        Rule(
            "HighMemoryUsage", "memory_share", "above", 0.9, target, for_s=1.0,
            labels={"resource": "memory"},
        ),
        Rule(
            "DatabaseConnectionPoolExhaustion", "pool_use", "above", 0.9, target, for_s=1.0,
            severity="critical", labels={"resource": "db_pool"},
        ),
        Rule(
            "CacheHitRatioDegraded", "cache_hit_ratio", "below", 0.5, target, for_s=2.0,
            labels={"resource": "cache"},
        ),
        Rule(
            "HighCPU", "cpu_share", "above", 0.85, target, for_s=30.0,
            labels={"resource": "cpu"},
        ),
    ]  # fmt: skip
