"""After an action: is the alert's condition gone? Fixed, not fixed, or inconclusive.

A window ends at its first sample that breaks the condition: the verdict is then known,
and the next step (a harsher action, a page) should not wait out the rest of it. It opens
at the first sample that holds, at the latest once ``wait`` is over, for the same reason:
``wait`` bounds the settle time, it is not a pause every fix has to sit out.

Inconclusive means the probe gave no data for the whole window: the engine must not call
that "fixed" (a dead exporter looks exactly like a healthy one) nor "not fixed" (which
would trigger a harsher action on no evidence); the playbook says what to do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..errors import TargetError
from .actions import ActionContext
from .alerts import Rule
from .playbooks import Condition, VerifySpec

__all__ = ["FIXED", "INCONCLUSIVE", "NOT_FIXED", "Interrupted", "VerifyResult", "verify"]

FIXED = "fixed"
NOT_FIXED = "not_fixed"
INCONCLUSIVE = "inconclusive"

_NEGATION = {"above": "at_most", "below": "at_least", "at_least": "below", "at_most": "above"}


class Interrupted(Exception):
    """The engine is stopping: the incident stays open and resumes on the next start."""


@dataclass(frozen=True)
class VerifyResult:
    outcome: str
    condition: str
    detail: str
    samples: tuple[float, ...] = ()


def effective_condition(spec: VerifySpec, ctx: ActionContext, rule: Rule | None) -> Condition:
    """Resolve "default" and probe conditions whose probe this engine does not have.

    default: the negation of the alert's own rule if the engine raised it, else the
    alert's resolution for webhook alerts, else the workload ready. A probe condition on
    an unknown probe falls back to the alert's resolution (Alertmanager knows the metric).
    """
    cond = spec.condition
    if cond.kind == "default":
        if rule is not None and rule.probe in ctx.probes:
            return Condition("probe", rule.probe, _NEGATION[rule.op], rule.threshold)
        return Condition("resolved" if ctx.alert.source == "webhook" else "ready")
    if cond.kind == "probe" and cond.probe not in ctx.probes:
        return Condition("resolved")
    return cond


def verify(
    spec: VerifySpec, ctx: ActionContext, *, rule: Rule | None, resolved: threading.Event
) -> VerifyResult:
    cond = effective_condition(spec, ctx, rule)
    if cond.kind == "resolved":
        if resolved.is_set() or _wait(ctx, spec.wait_s + spec.window_s, resolved):
            return VerifyResult(FIXED, "resolved", "alert resolved")
        return VerifyResult(NOT_FIXED, "resolved", "alert still firing after the window")
    if cond.kind == "ready":
        # settle: give the platform up to `wait` to bring the replicas up
        try:
            for name in ctx.state.get("workloads") or [ctx.workload]:
                ctx.target.wait_ready(name, timeout=spec.wait_s)
        except (TargetError, TimeoutError) as exc:
            if ctx.stop.is_set():
                raise Interrupted from None
            return VerifyResult(NOT_FIXED, f"ready({ctx.workload})", f"not ready: {exc}")
        samples = _window(ctx, cond, spec, settle_s=0.0)
    else:
        samples = _window(ctx, cond, spec, settle_s=spec.wait_s)
    if cond.kind == "ready":
        name = f"ready({', '.join(ctx.state.get('workloads') or [ctx.workload])})"
        bad = [s for s in samples if s < 1.0]
        outcome = NOT_FIXED if bad or not samples else FIXED
        detail = f"not ready in {len(bad)} of {len(samples)} samples" if bad else "ready"
        return VerifyResult(outcome, name, detail, tuple(samples))
    name = f"{cond.probe} {cond.op} {cond.threshold:g}"
    if not samples:
        return VerifyResult(INCONCLUSIVE, name, f"probe {cond.probe} gave no data")
    bad = [s for s in samples if not cond.holds(s)]
    if bad:
        detail = f"{len(bad)} of {len(samples)} samples broke it (worst {_worst(cond, bad):g})"
        return VerifyResult(NOT_FIXED, name, detail, tuple(samples))
    return VerifyResult(FIXED, name, f"held in {len(samples)} samples", tuple(samples))


def _window(
    ctx: ActionContext, cond: Condition, spec: VerifySpec, *, settle_s: float
) -> list[float]:
    """The samples of the verify window; the first one that breaks the condition ends it.

    The window opens at the first sample that holds, at the latest ``settle_s`` after the
    actions: a fix that works at once is judged after ``window``, not ``wait`` + ``window``.
    A break while still settling only means "not yet" and the window opens again later.
    """
    settled_at = time.monotonic() + settle_s
    samples: list[float] = []
    deadline: float | None = None
    while True:
        now = time.monotonic()
        if deadline is None and now >= settled_at:
            deadline = now + spec.window_s
        value = _sample(ctx, cond)
        if value is not None:
            holds = _holds(cond, value)
            if deadline is None and holds:
                deadline = now + spec.window_s
            if deadline is not None:
                samples.append(value)
                if not holds:
                    if now < settled_at:  # still settling: not yet, not "not fixed"
                        samples, deadline = [], None
                    else:
                        return samples  # judged: "held over the window" can no longer be true
        if deadline is not None and time.monotonic() >= deadline:
            return samples
        until = deadline if deadline is not None else settled_at
        _wait(ctx, min(spec.interval_s, max(0.0, until - time.monotonic())))


def _holds(cond: Condition, value: float) -> bool:
    return value >= 1.0 if cond.kind == "ready" else cond.holds(value)


def _sample(ctx: ActionContext, cond: Condition) -> float | None:
    if cond.kind == "ready":
        workloads = ctx.state.get("workloads") or [ctx.workload]
        try:
            live = {w.name: w for w in ctx.target.workloads()}
            pods = ctx.target.pods()
        except TargetError:
            return 0.0
        for name in workloads:
            ready = sum(1 for p in pods if p.workload == name and p.ready)
            wanted = live[name].replicas if name in live else 1
            if ready < max(1, wanted):
                return 0.0
        return 1.0
    try:
        return ctx.probe(cond.probe)
    except Exception:  # a probe that raises gives no data
        return None


def _wait(ctx: ActionContext, seconds: float, until: threading.Event | None = None) -> bool:
    """Wait ``seconds`` (or until ``until`` is set); raise Interrupted if the engine stops."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if ctx.stop.is_set():
            raise Interrupted
        if until is not None and until.is_set():
            return True
        if remaining <= 0:
            return False
        (until or ctx.stop).wait(min(remaining, 0.05 if until is not None else remaining))


def _worst(cond: Condition, values: list[float]) -> float:
    return max(values) if cond.op in ("below", "at_most") else min(values)
