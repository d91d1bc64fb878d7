"""Which monitoring a chaos run uses: real Prometheus + Alertmanager, or the built-in probes.

One :class:`Monitoring` per pytest session, opened on first use (``ChaosRun.monitoring``):

- ``--prometheus-url`` given: PromQL SLOs read that server (checked reachable at once, so
  a wrong URL fails the first test that needs it with the URL in the message). Its alerts
  go wherever its own configuration sends them, so the engine keeps its own rules.
- no URL, local target, ``prometheus`` on PATH: a managed Prometheus on a free loopback
  port scrapes every local pod that has a private port (``/metrics``), following pods as
  they come and go (``subscribe`` -> ``update_targets``, labels service/pod/node), loads
  the packaged rules for the seed's alerts, and notifies a managed Alertmanager (when
  ``prometheus-alertmanager`` is on PATH too) that routes every alert to the remediation
  engine's webhook receiver on a port reserved here for the session.
- otherwise: the built-in probes serve, and ``probe_path`` says so in the report.

:func:`loop_split` reads back, from Prometheus' own storage, where an alert's detection
time went (scrape, rule evaluation, rule ``for``, Alertmanager, engine) and marks each step
on the scenario's timeline.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, cast

from .errors import ConfigError
from .ports import free_port
from .prometheus import (
    ManagedAlertmanager,
    ManagedPrometheus,
    PrometheusUnreachable,
    PromQLProbe,
    ScrapeTarget,
)
from .targets.base import PodMetrics, Target
from .timeline import ACTION_STARTED, ALERT_FIRED, Timeline

__all__ = [
    "BUILTIN",
    "PROMETHEUS",
    "LoopSplit",
    "Monitoring",
    "PodFollower",
    "loop_split",
    "open_monitoring",
    "pod_targets",
]

log = logging.getLogger("pytest_resilience.monitoring")

PROMETHEUS = "prometheus"
BUILTIN = "built-in"

#: timeline event kinds of the Prometheus steps of the loop (the engine marks the rest)
METRIC_BREACHED = "metric_breached"
RULE_PENDING = "rule_pending"
RULE_FIRING = "rule_firing"


def pod_targets(target: Target) -> list[ScrapeTarget]:
    """Every live pod a Prometheus here can scrape directly (the
    :class:`~.targets.base.PodMetrics` capability's ``metrics_address``), as a scrape
    target labelled service/pod/node; none on a target without it."""
    if not isinstance(target, PodMetrics):
        return []
    found = []
    for pod in target.pods():
        try:
            address = target.metrics_address(pod)
        except Exception:  # gone between listing and asking
            continue
        if not address:
            continue
        labels = {"service": pod.workload, "pod": pod.name}
        if pod.node:
            labels["node"] = pod.node
        found.append(ScrapeTarget(address, labels))
    return found


class PodFollower:
    """Keeps a managed Prometheus' file_sd in step with the target's pods.

    Target events only wake a thread that re-lists the pods: the callback runs on the
    target's event thread and must not block it, and a burst of events (a rollout)
    becomes one rewrite. Prometheus 2.x applies file_sd changes in 5 s batches, so a new
    pod is scraped 5-10 s after it starts; a pod that hangs stays listed (``up`` = 0 is
    what NodeNotReady reads).
    """

    def __init__(self, target: Target, prometheus: ManagedPrometheus) -> None:
        self.target = target
        self.prometheus = prometheus
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._current: list[ScrapeTarget] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.updates = 0

    def start(self) -> PodFollower:
        self.refresh()
        self._unsubscribe = self.target.subscribe(lambda _event: self._wake.set())
        self._thread = threading.Thread(target=self._run, name="prometheus-pods", daemon=True)
        self._thread.start()
        return self

    def refresh(self) -> list[ScrapeTarget]:
        found = pod_targets(self.target)
        if found != self._current:
            self.prometheus.update_targets(found)
            self._current = found
            self.updates += 1
            log.debug("scrape targets: %s", [t.labels.get("pod") for t in found])
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(2.0)  # the timeout is a back-stop for a missed event
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except Exception:  # a closing target; the next event retries
                log.debug("refreshing scrape targets failed", exc_info=True)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@dataclass
class Monitoring:
    """What this session monitors with; ``probe_path`` is "prometheus" or "built-in"."""

    probe_path: str
    reason: str
    prometheus_url: str | None = None
    prometheus: ManagedPrometheus | None = None
    alertmanager: ManagedAlertmanager | None = None
    #: where the engine's webhook receiver listens when Alertmanager routes to it
    webhook_listen: str | None = None
    follower: PodFollower | None = None

    @property
    def managed(self) -> bool:
        return self.prometheus is not None

    @property
    def routes_alerts(self) -> bool:
        """Alertmanager delivers the rules' alerts to the engine's webhook receiver."""
        return self.alertmanager is not None and self.webhook_listen is not None

    @property
    def webhook_url(self) -> str | None:
        return f"http://{self.webhook_listen}/alerts" if self.webhook_listen else None

    def describe(self) -> str:
        if self.probe_path == BUILTIN:
            return f"probes: built-in ({self.reason})"
        where = f"Prometheus at {self.prometheus_url}"
        if self.managed:
            where = f"managed {where}"
        if self.alertmanager is not None:
            where += f", Alertmanager at {self.alertmanager.url} -> engine {self.webhook_url}"
        return f"probes: prometheus ({where})"

    def probe(self, name: str, expr: str, **options: Any) -> PromQLProbe:
        """A PromQL probe on this session's Prometheus (ConfigError on the built-in path)."""
        if self.prometheus_url is None:
            raise ConfigError(
                f"PromQL SLO {name!r} needs a Prometheus, and this run has none ({self.reason}); "
                "give --prometheus-url or install the Debian package prometheus",
                source=f"SLO {name!r}",
                field="prometheus_url",
            )
        return PromQLProbe(name, expr, url=self.prometheus_url, **options)

    def wait_scraped(self, timeout: float = 20.0) -> None:
        """Until every current pod has been scraped (managed Prometheus only)."""
        if self.prometheus is None:
            return
        if self.follower is not None:
            self.follower.refresh()
        self.prometheus.wait_for_targets_up(timeout=timeout)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        for server in (self.prometheus, self.alertmanager):
            if server is not None:
                server.stop()


def _check_reachable(url: str) -> None:
    """One cheap query with a short timeout: a wrong URL fails now, naming the URL."""
    probe = PromQLProbe("--prometheus-url", "vector(1)", url=url, timeout_s=2.0)
    try:
        probe.read()
    except PrometheusUnreachable as exc:
        cause = str(exc.__cause__ or exc)
        errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", cause)
        why = errno.group(1) if errno else type(exc.__cause__ or exc).__name__
        raise PrometheusUnreachable(
            f"cannot reach Prometheus at {url} within 2 s ({why}); is it running, and is "
            "the URL right?",
            source="--prometheus-url",
        ) from exc
    finally:
        probe.close()


def open_monitoring(
    target: Target,
    *,
    prometheus_url: str | None = None,
    local: bool = True,
    scrape_interval_s: float = 1.0,
    group_wait_s: float = 1.0,
    targets_timeout_s: float = 20.0,
) -> Monitoring:
    """Decide the path (see the module docstring) and start what it needs.

    ``local``: the target's pods are reachable from here (the embedded local target);
    a managed Prometheus is only started for such a target.
    """
    if prometheus_url:
        if not prometheus_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{prometheus_url!r} must start with http:// or https://",
                source="--prometheus-url",
                field="prometheus_url",
            )
        url = prometheus_url.rstrip("/")
        _check_reachable(url)
        return Monitoring(PROMETHEUS, "--prometheus-url", prometheus_url=url)
    if not local:
        return Monitoring(BUILTIN, "no --prometheus-url for a remote target")
    if not ManagedPrometheus.available():
        return Monitoring(BUILTIN, "prometheus is not on PATH")
    monitoring = Monitoring(PROMETHEUS, "managed")
    try:
        am_address = None
        if ManagedAlertmanager.available():
            monitoring.webhook_listen = f"127.0.0.1:{free_port()}"
            monitoring.alertmanager = ManagedAlertmanager(
                monitoring.webhook_url or "", group_wait_s=group_wait_s
            ).start()
            am_address = monitoring.alertmanager.address
        else:
            monitoring.reason = "managed; prometheus-alertmanager is not on PATH"
        # The first pods go into the file before the server starts: no discovery batch wait.
        monitoring.prometheus = ManagedPrometheus(
            targets=pod_targets(target),
            alertmanager=am_address,
            scrape_interval_s=scrape_interval_s,
            evaluation_interval_s=scrape_interval_s,
        ).start()
        monitoring.prometheus_url = monitoring.prometheus.url
        monitoring.follower = PodFollower(target, monitoring.prometheus).start()
        monitoring.wait_scraped(targets_timeout_s)
    except BaseException:
        monitoring.close()
        raise
    log.info("%s", monitoring.describe())
    return monitoring


ALERT_SOURCES = ("auto", "alertmanager", "built-in")


def engine_alert_options(source: str, monitoring: Monitoring | None) -> dict[str, Any]:
    """The Engine keyword arguments for where its alerts come from.

    "alertmanager": the engine's webhook listens where this session's Alertmanager sends,
    and its own probe rules stay off (their probes still serve verify conditions), so
    every alert has come through the real servers. "built-in": its own rules only.
    "auto": Alertmanager when ``monitoring`` routes alerts, else built-in.
    """
    if source not in ALERT_SOURCES:
        raise ConfigError(
            f"remediation_alerts {source!r} is not one of {list(ALERT_SOURCES)}",
            source="remediation_alerts",
            field="value",
        )
    routes = monitoring is not None and monitoring.routes_alerts
    if source == "alertmanager" and not routes:
        why = monitoring.describe() if monitoring is not None else "no monitoring"
        raise ConfigError(
            "remediation_alerts='alertmanager' needs the managed Prometheus and Alertmanager "
            f"(Debian packages prometheus, prometheus-alertmanager); this run has {why}",
            source="remediation_alerts",
            field="value",
        )
    if source == "built-in" or not routes:
        return {}
    assert monitoring is not None
    return {"listen": monitoring.webhook_listen, "own_rules": False}


def mark_loop(monitoring: Monitoring, timeline: Timeline) -> LoopSplit | None:
    """Mark the Prometheus steps of this scenario's first alert on its timeline.

    Best effort at teardown: a report without the split is better than a failed teardown.
    """
    if monitoring.prometheus_url is None:
        return None
    try:
        return loop_split(monitoring.prometheus_url, timeline)
    except Exception:
        log.warning("could not split detection time through Prometheus", exc_info=True)
        return None


# -- where detection time went -------------------------------------------------------------


@dataclass(frozen=True)
class LoopSplit:
    """Seconds per step from the fault (T0) to the alert at the engine, Prometheus path.

    scrape: T0 -> the first stored sample that breaks the rule's expression;
    evaluate: that sample -> the rule's first matching evaluation (pending);
    rule_for: pending -> firing (the rule's ``for``);
    alertmanager: firing -> the webhook at the engine (group wait, delivery);
    engine: webhook received -> first remediation action started (None: no action).
    """

    alert: str
    total: float
    scrape: float
    evaluate: float
    rule_for: float
    alertmanager: float
    engine: float | None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _api(url: str, path: str, **params: str) -> Any:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=5.0) as resp:
        return json.load(resp)["data"]


def _rule_query(url: str, alert: str) -> str | None:
    for group in _api(url, "rules", type="alert")["groups"]:
        for rule in group["rules"]:
            if rule.get("name") == alert:
                return cast(str, rule["query"])  # Prometheus's rules API: the PromQL text
    return None


def _first_alerts_sample(url: str, alert: str, state: str, since: float, until: float) -> float:
    window = max(1, int(until - since) + 2)
    data = _api(
        url,
        "query",
        query=f'ALERTS{{alertname="{alert}",alertstate="{state}"}}[{window}s]',
        time=f"{until + 1:.3f}",
    )
    stamps = [float(t) for r in data["result"] for t, _ in r["values"] if float(t) >= since]
    return min(stamps) if stamps else until


def _first_breach(url: str, query: str, since: float, until: float) -> float:
    """When the rule's expression first had a result: its first breaking sample's time."""
    if until <= since:
        return until
    step = max(0.05, (until - since) / 2000)
    data = _api(
        url,
        "query_range",
        query=query,
        start=f"{since:.3f}",
        end=f"{until:.3f}",
        step=f"{step:.3f}",
    )
    stamps = [float(t) for r in data["result"] for t, _ in r["values"]]
    return min(stamps) if stamps else until


def loop_split(prometheus_url: str, timeline: Timeline, *, mark: bool = True) -> LoopSplit | None:
    """The split of the first Alertmanager alert after T0; marks its steps on ``timeline``.

    Reads Prometheus' storage (the rule's query over time, the ALERTS series), so it
    works after the alert resolved. None when no alert came through Alertmanager.
    """
    t0 = timeline.t0
    if t0 is None:
        return None
    fired = next(
        (
            e
            for e in timeline.events(ALERT_FIRED, since=t0)
            if e.detail.get("source") == "alertmanager"
        ),
        None,
    )
    if fired is None:
        return None
    query = _rule_query(prometheus_url, fired.name)
    if query is None:
        return None
    firing = _first_alerts_sample(prometheus_url, fired.name, "firing", t0, fired.at)
    pending = min(firing, _first_alerts_sample(prometheus_url, fired.name, "pending", t0, firing))
    breached = min(pending, _first_breach(prometheus_url, query, t0, pending))
    incident = fired.detail.get("incident")
    action = next(
        (
            e
            for e in timeline.events(ACTION_STARTED, since=fired.at)
            if incident is None or e.detail.get("incident") == incident
        ),
        None,
    )
    split = LoopSplit(
        alert=fired.name,
        total=fired.at - t0,
        scrape=breached - t0,
        evaluate=pending - breached,
        rule_for=firing - pending,
        alertmanager=fired.at - firing,
        engine=(action.at - fired.at) if action else None,
    )
    if mark:
        timeline.mark(METRIC_BREACHED, fired.name, at=breached, source="prometheus")
        timeline.mark(RULE_PENDING, fired.name, at=pending, source="prometheus")
        timeline.mark(
            RULE_FIRING, fired.name, at=firing, source="prometheus", split=split.as_dict()
        )
    return split


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` with a deadline (for callers without a timeline to wait on)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g} s")
        time.sleep(0.05)
