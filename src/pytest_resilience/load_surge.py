"""High load against an autoscaled workload: the pieces the high-load scenarios share.

``autoscaled(target, spec)`` puts a workload under an HPA spec for one scenario and takes
it away again, replicas back as they were, so no other scenario meets the extra pods;
``scaled_up(timeline, since)`` reads the autoscaler's scale-up decisions off the timeline
(the ``autoscaled`` target events, ``"3 -> 6: cpu above target ..."``); :class:`LoadSurge`
is the YAML scenarios' ``load_surge`` step: more load on top of the scenario's own, held
until the workload scaled up and its new replicas served for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from .errors import FaultError
from .targets.base import Autoscaling, EventKind, Target
from .targets.hpa_spec import AutoscalerSpec
from .timeline import FAULT_INJECTED, FAULT_REVERTED, Event, Timeline

__all__ = ["SURGE", "LoadSurge", "autoscaled", "replicas_of", "scaled_up"]

SURGE = "load_surge"
"""The fault name of a surge on the timeline (``fault_injected``, ``asked_rps`` in detail)."""
SCALED_UP = "scaled_up"
"""Timeline event: how long after the surge the first scale-up came, and its replicas."""


class AutoscaledTarget(Target, Autoscaling, Protocol):
    """A target with the ``autoscaling`` capability: scaled by ``autoscaled`` and by hand."""


def replicas_of(target: Target, workload: str) -> int:
    return int(next(w.replicas for w in target.workloads() if w.name == workload))


@contextmanager
def autoscaled(target: AutoscaledTarget, spec: AutoscalerSpec) -> Iterator[AutoscalerSpec]:
    """``spec.workload`` under ``spec`` inside the block; afterwards no autoscaler and the
    replicas it had before (waited for)."""
    before = replicas_of(target, spec.workload)
    target.autoscale(spec)
    try:
        yield spec
    finally:
        target.stop_autoscaling(spec.workload)
        if replicas_of(target, spec.workload) != before:
            target.scale(spec.workload, before)
        target.wait_ready(spec.workload, timeout=60, replicas=before)


def scaled_up(timeline: Timeline, since: float) -> list[Event]:
    """The autoscaler's scale-up decisions since ``since``, oldest first."""
    ups = []
    for event in timeline.events(str(EventKind.AUTOSCALED), since=since):
        text = str(event.detail.get("detail", "")).partition(":")[0]
        before, _, after = text.partition(" -> ")
        if before.strip().isdigit() and after.strip().isdigit() and int(after) > int(before):
            ups.append(event)
    return ups


class LoadSurge:
    """``rps`` more requests/s until the workload scaled up (within ``scaled_up_within_s``)
    and its new replicas, all ready, served ``hold_s`` seconds of it; then the surge stops
    at :meth:`revert`. A workload that did not scale up is a FaultError saying what the
    autoscaler last saw."""

    def __init__(
        self,
        *,
        target: Any,
        timeline: Timeline,
        load: Callable[..., Any],
        workload: str,
        rps: float,
        scaled_up_within_s: float = 90.0,
        hold_s: float = 5.0,
    ) -> None:
        self.workload = workload
        self.timeline = timeline
        before = replicas_of(target, workload)
        # high load is the scenario's fault (T0): the report and assert_recovers count from it
        self.started = timeline.mark(FAULT_INJECTED, SURGE, asked_rps=rps).at
        self.run = load(rps=rps)
        try:
            timeline.wait_for(
                lambda: bool(scaled_up(timeline, self.started)), timeout=scaled_up_within_s
            )
            ups = scaled_up(timeline, self.started)
            if not ups:
                raise FaultError(
                    f"{workload} did not scale up within {scaled_up_within_s:g} s of +{rps:g} "
                    f"rps (autoscaler: {target.autoscaler_status(workload)})"
                )
            grown = replicas_of(target, workload)
            target.wait_ready(workload, timeout=60, replicas=grown)
            ready_at = time.time()
            self.run.wait_for_samples(
                len(self.run.samples) + max(1, round(hold_s)), timeout=hold_s + 30
            )
            timeline.mark(
                SCALED_UP,
                workload,
                after_s=round(ups[0].at - self.started, 3),
                ready_after_s=round(ready_at - self.started, 3),
                replicas_before=before,
                replicas=grown,
            )
        except BaseException:
            self.run.stop()
            raise

    def revert(self) -> None:
        self.run.stop()
        self.timeline.mark(FAULT_REVERTED, SURGE)
