"""The local target's HorizontalPodAutoscaler: a supervised loop per autoscaled service.

What a cluster splits over three components runs here in one thread per workload:

- metrics-server: each pod's CPU, read every sync period as cumulative CPU time (the
  pod's cgroup v2 ``cpu.stat`` where it has one, else the CPU times of its process tree)
  and turned into milli-cores over the last ``window_s``, as the kubelet's rate over its
  resolution; a pod seen for less than a window has no metric yet (``missing``), as a
  freshly started pod has none in metrics-server;
- the HPA controller: :class:`~..hpa.HorizontalController` with the spec's min/max,
  tolerance, stabilization windows and policies, every ``sync_period_s`` (the cluster's
  ``--horizontal-pod-autoscaler-sync-period`` is 15 s; 2 s here, so a scenario that
  ramps load sees the scale-up in seconds);
- the Deployment's scale subresource: ``target.scale(workload, n)``.

Each rescale is announced as an ``autoscaled`` target event (so it lands on the
scenario's timeline with the reason, e.g. ``3 -> 6: cpu above target (52m per pod, target
25m)``). The loop survives any error in one round (logged, retried next period) and stops
with the target or :meth:`LocalAutoscalers.stop`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from ...errors import ConfigError, TargetError
from ..hpa import HorizontalController, PodSample, resource_replicas
from ..hpa_spec import AutoscalerSpec, AutoscalerStatus
from .cgroups import cgroup2_root
from .processes import pod_processes

if TYPE_CHECKING:
    from ..base import Pod, Workload

__all__ = ["LocalAutoscalers", "pod_cpu_seconds"]

log = logging.getLogger("pytest_resilience.targets.local_autoscaler")

SYNC_PERIOD_S = 2.0
WINDOW_S = 4.0


def pod_cpu_seconds(pod: Pod) -> float | None:
    """Cumulative CPU seconds of a local pod: its cgroup v2 ``cpu.stat`` (``usage_usec``,
    every process that ever ran in it), else the CPU times of its live process tree."""
    root = cgroup2_root() if pod.cgroup else None
    if root is not None and pod.cgroup is not None:
        with contextlib.suppress(OSError, ValueError):
            for line in (root / pod.cgroup.lstrip("/") / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    if pod.pid is None:
        return None
    total = 0.0
    found = False
    for pid in pod_processes(
        pod.pid, [Path(root, pod.cgroup.lstrip("/"))] if root and pod.cgroup else []
    ):
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
            found = True
    return total if found else None


@dataclass
class _PodSeen:
    first_seen: float
    ready_since: float | None = None
    readings: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=64))


class _Loop:
    """One autoscaled workload: measure, calculate, decide, scale, announce."""

    def __init__(
        self,
        target: _Host,
        spec: AutoscalerSpec,
        *,
        sync_period_s: float,
        window_s: float,
        announce: Callable[[str, str], None],
    ) -> None:
        self.target = target
        self.spec = spec
        self.sync_period_s = sync_period_s
        self.window_s = window_s
        self.announce = announce
        self.controller = HorizontalController(spec)
        self.status = AutoscalerStatus(spec.workload, 0, 0)
        self._seen: dict[str, _PodSeen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"resilience-autoscaler-{spec.workload}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.sync_period_s + 5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.sync_period_s):
            try:
                self.round(time.time())
            except Exception:  # one bad round (a pod gone mid-read) must not end autoscaling
                log.exception(
                    "autoscaler for %s: round failed (retried next period)", self.spec.workload
                )

    def round(self, now: float) -> None:
        workload = self.spec.workload
        current = next((w.replicas for w in self.target.workloads() if w.name == workload), None)
        if current is None:
            raise TargetError(f"autoscaler: no workload {workload!r}")
        samples = self._measure([p for p in self.target.pods() if p.workload == workload], now)
        try:
            proposed, usage = resource_replicas(current, self.spec.metric, samples, now=now)
        except ValueError as exc:  # no metrics yet: the HPA's ScalingActive=False, no change
            log.debug("autoscaler for %s: %s", workload, exc)
            self.status = AutoscalerStatus(
                workload, current, current, "", self.status.last_scale_at, problem=str(exc)
            )
            return
        decision = self.controller.reconcile(current, proposed, now=now)
        shown = f"{usage}m per pod" if self.spec.metric.type == "AverageValue" else f"{usage}%"
        last = self.status.last_scale_at
        if decision.rescale and not self._stop.is_set():
            self.target.scale(workload, decision.desired)
            last = now
            self.announce(
                workload,
                f"{decision.current} -> {decision.desired}: {decision.reason} "
                f"({shown}, target {self.spec.metric.describe()})",
            )
        self.status = AutoscalerStatus(workload, current, decision.desired, shown, last)

    def _measure(self, pods: list[Pod], now: float) -> list[PodSample]:
        for gone in set(self._seen) - {p.name for p in pods}:
            del self._seen[gone]
        samples = []
        for pod in pods:
            seen = self._seen.setdefault(pod.name, _PodSeen(first_seen=now))
            if pod.ready and seen.ready_since is None:
                seen.ready_since = now
            elif not pod.ready:
                seen.ready_since = None
            cpu = pod_cpu_seconds(pod)
            if cpu is not None:
                seen.readings.append((now, cpu))
            usage = None
            old = [r for r in seen.readings if r[0] <= now - self.window_s]
            if old and cpu is not None:
                at, then = old[-1]
                usage = max(0, round((cpu - then) / (now - at) * 1000))
            samples.append(
                PodSample(
                    name=pod.name,
                    usage_m=usage,
                    ready=pod.ready,
                    started_at=seen.first_seen,
                    ready_since=seen.ready_since,
                    metric_at=now,
                    metric_window_s=self.window_s,
                )
            )
        return samples


class _Host(Protocol):
    """What the loop needs of the local target (LocalTarget satisfies it)."""

    def workloads(self) -> list[Workload]: ...

    def pods(self) -> list[Pod]: ...

    def scale(self, workload: str, replicas: int) -> None: ...


class LocalAutoscalers:
    """The autoscalers of one local target, at most one per workload."""

    def __init__(
        self,
        target: _Host,
        announce: Callable[[str, str], None],
        *,
        sync_period_s: float = SYNC_PERIOD_S,
        window_s: float = WINDOW_S,
    ) -> None:
        self._target = target
        self._announce = announce
        self._sync_period_s = sync_period_s
        self._window_s = window_s
        self._loops: dict[str, _Loop] = {}
        self._lock = threading.Lock()

    def start(self, spec: AutoscalerSpec, *, known: set[str]) -> None:
        """Put ``spec.workload`` under ``spec`` (replacing an autoscaler already there)."""
        if spec.workload not in known:
            raise ConfigError(
                f"scaleTargetRef names {spec.workload!r}, which is no service of this target; "
                f"services: {', '.join(sorted(known))}",
                source=spec.source,
                field="spec.scaleTargetRef.name",
            )
        if spec.metric.type == "Utilization":
            raise ConfigError(
                "local pods declare no CPU request, so a Utilization target has nothing to be a "
                "percentage of; use target type AverageValue (e.g. averageValue: 25m)",
                source=spec.source,
                field="spec.metrics[0].resource.target.type",
            )
        loop = _Loop(
            self._target,
            spec,
            sync_period_s=self._sync_period_s,
            window_s=self._window_s,
            announce=self._announce,
        )
        with self._lock:
            old, self._loops[spec.workload] = self._loops.get(spec.workload), loop
        if old is not None:
            old.stop()
        loop.start()

    def stop(self, workload: str) -> None:
        with self._lock:
            loop = self._loops.pop(workload, None)
        if loop is not None:
            loop.stop()

    def stop_all(self) -> None:
        with self._lock:
            loops, self._loops = list(self._loops.values()), {}
        for loop in loops:
            loop.stop()

    def status(self, workload: str) -> AutoscalerStatus | None:
        with self._lock:
            loop = self._loops.get(workload)
        return None if loop is None else loop.status
