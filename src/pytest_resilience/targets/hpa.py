"""The HorizontalPodAutoscaler's arithmetic (autoscaling/v2), for targets that have none.

One spec (:mod:`.hpa_spec`) and one algorithm for both targets: Kubernetes gets the spec as
a real HorizontalPodAutoscaler object; the local target runs :class:`HorizontalController`
in a loop of its own (``local/autoscaler.py``). Followed from kubernetes/kubernetes
``pkg/controller/podautoscaler``:

- ``replica_calculator.go`` ``GetResourceReplicas`` / ``GetRawResourceReplicas``
  (:func:`resource_replicas`): desired = ceil(ready pods x usage / target), nothing within
  the tolerance (0.1); pods deleted or failed ignored, pending and initialising pods left
  out (0 % on a scale-up), pods without metrics at 0 % on a scale-up and at 100 % of their
  request (or the target) on a scale-down, no change where that flips the direction;
  ``groupPods``; ``metrics/utilization.go`` (integer percent, integer milli-units);
- ``horizontal.go`` ``reconcileAutoscaler`` (:meth:`HorizontalController.reconcile`): min /
  max first, a workload at 0 replicas left alone; without ``behavior`` the 5-minute
  downscale window and the scale-up limit max(2 x current, 4); with ``behavior`` both
  stabilization windows and the rate policies over each policy period's scale events.

Time is passed in (``now``, seconds), so the arithmetic is checked against the cases of
the Kubernetes tests without waiting for anything (tests/local/test_autoscaler_algorithm.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .hpa_spec import (
    AutoscalerSpec,
    AutoscalerStatus,
    Behavior,
    MetricTarget,
    ScalingPolicy,
    ScalingRules,
    default_scale_down,
    default_scale_up,
)

__all__ = [
    "DEFAULT_DOWNSCALE_WINDOW_S",
    "DEFAULT_TOLERANCE",
    "AutoscalerSpec",
    "AutoscalerStatus",
    "Behavior",
    "HorizontalController",
    "MetricTarget",
    "PodSample",
    "ScaleDecision",
    "ScalingPolicy",
    "ScalingRules",
    "default_scale_down",
    "default_scale_up",
    "resource_replicas",
]

#: kube-controller-manager --horizontal-pod-autoscaler-tolerance
DEFAULT_TOLERANCE = 0.1
#: --horizontal-pod-autoscaler-downscale-stabilization
DEFAULT_DOWNSCALE_WINDOW_S = 300.0
#: --horizontal-pod-autoscaler-cpu-initialization-period
DEFAULT_CPU_INITIALIZATION_S = 300.0
#: --horizontal-pod-autoscaler-initial-readiness-delay
DEFAULT_INITIAL_READINESS_DELAY_S = 30.0
_SCALE_UP_LIMIT_FACTOR = 2.0
_SCALE_UP_LIMIT_MINIMUM = 4
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class PodSample:
    """One pod as ``groupPods`` sees it: its phase and readiness, and its metric.

    ``usage_m`` is None for a pod the metrics API has nothing for. Times are seconds on
    one clock (``now`` of the calculation): the pod's start, its Ready condition's last
    transition, and the end and length of the metric's window.
    """

    name: str
    usage_m: int | None
    request_m: int | None = None
    phase: Literal["Running", "Pending", "Failed"] = "Running"
    ready: bool = True
    deleting: bool = False
    started_at: float | None = 0.0
    ready_since: float | None = 0.0
    metric_at: float = 0.0
    metric_window_s: float = 0.0


@dataclass(frozen=True)
class _Grouped:
    ready: int
    unready: set[str]
    missing: set[str]
    ignored: set[str]


def _group_pods(
    pods: Sequence[PodSample], now: float, cpu_initialization_s: float, readiness_delay_s: float
) -> _Grouped:
    """groupPods (resource cpu): which pods count, which are left out and why."""
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleting or pod.phase == "Failed":
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        if pod.usage_m is None:
            missing.add(pod.name)
            continue
        if pod.ready_since is None or pod.started_at is None:
            is_unready = True
        elif pod.started_at + cpu_initialization_s > now:
            # within initialization: unready, or no full metric window since it turned ready
            is_unready = not pod.ready or pod.metric_at < pod.ready_since + pod.metric_window_s
        else:
            # afterwards: only a pod that is unready and never was ready since its start
            is_unready = not pod.ready and pod.started_at + readiness_delay_s > pod.ready_since
        if is_unready:
            unready.add(pod.name)
            continue
        ready += 1
    return _Grouped(ready, unready, missing, ignored)


def _within(ratio: float, tolerance: float) -> bool:
    return 1.0 - tolerance <= ratio <= 1.0 + tolerance


def _utilization(
    metrics: Mapping[str, int], requests: Mapping[str, int], target: int
) -> tuple[float, int, int]:
    """GetResourceUtilizationRatio: (ratio, utilization %, raw average milli-value)."""
    counted = [name for name in metrics if name in requests]
    requests_total = sum(requests[name] for name in counted)
    if requests_total == 0:
        raise ValueError("no metrics returned matched known pods")
    metrics_total = sum(metrics[name] for name in counted)
    utilization = metrics_total * 100 // requests_total
    return utilization / target, utilization, metrics_total // len(counted)


def _average(metrics: Mapping[str, int], target_m: int) -> tuple[float, int]:
    """GetMetricUsageRatio: (ratio, average milli-value per pod)."""
    usage = sum(metrics.values()) // len(metrics)
    return usage / target_m, usage


def resource_replicas(
    current: int,
    metric: MetricTarget,
    pods: Sequence[PodSample],
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
    cpu_initialization_s: float = DEFAULT_CPU_INITIALIZATION_S,
    readiness_delay_s: float = DEFAULT_INITIAL_READINESS_DELAY_S,
) -> tuple[int, int]:
    """(replicas the metric asks for, current usage: % of request or milli-units per pod).

    ValueError with the controller's words where it would not compute (no pods, no
    metrics, a pod without a request for a Utilization target).
    """
    if not pods:
        raise ValueError("no pods returned by selector while calculating replica count")
    grouped = _group_pods(pods, now, cpu_initialization_s, readiness_delay_s)
    left_out = grouped.ignored | grouped.unready
    metrics = {p.name: p.usage_m for p in pods if p.usage_m is not None and p.name not in left_out}
    if not metrics:
        raise ValueError("did not receive metrics for targeted pods (pods might be unready)")
    utilization_target = metric.type == "Utilization"
    requests: dict[str, int] = {}
    if utilization_target:
        for pod in pods:
            if pod.request_m is None:
                raise ValueError(f"missing request for cpu in pod {pod.name}")
            requests[pod.name] = pod.request_m
        target_pct = int(metric.average_utilization or 0)
        ratio, usage, _ = _utilization(metrics, requests, target_pct)
    else:
        target_m = int(metric.average_value_m or 0)
        ratio, usage = _average(metrics, target_m)

    def again(values: Mapping[str, int]) -> float:
        if utilization_target:
            return _utilization(values, requests, target_pct)[0]
        return _average(values, target_m)[0]

    scale_up_with_unready = bool(grouped.unready) and ratio > 1.0
    if not scale_up_with_unready and not grouped.missing:
        if _within(ratio, tolerance):
            return current, usage
        return _ceil(ratio * grouped.ready), usage
    if grouped.missing:
        if ratio < 1.0:  # a scale-down: count the silent pods as busy
            for name in grouped.missing:
                if utilization_target:
                    fallback = max(100, target_pct)
                    metrics[name] = requests[name] * fallback // 100
                else:
                    metrics[name] = target_m
        elif ratio > 1.0:  # a scale-up: count them as idle
            for name in grouped.missing:
                metrics[name] = 0
    if scale_up_with_unready:
        for name in grouped.unready:
            metrics[name] = 0
    new_ratio = again(metrics)
    if _within(new_ratio, tolerance) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current, usage  # too small a change, or the rebalancing flips the direction
    replicas = _ceil(new_ratio * len(metrics))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current, usage
    return replicas, usage


@dataclass(frozen=True)
class ScaleDecision:
    """One reconcile: the replicas to set (== current: no change) and why."""

    current: int
    desired: int
    reason: str
    #: the ScalingLimited / AbleToScale reason, as the HPA's conditions would show it
    condition: str = ""

    @property
    def rescale(self) -> bool:
        return self.desired != self.current


@dataclass
class _ScaleEvent:
    change: int
    at: float
    outdated: bool = False


class HorizontalController:
    """The HPA controller's state for one autoscaler: recommendations and scale events.

    Not thread-safe; one loop owns it. ``downscale_window_s`` is the controller flag used
    where the spec sets no scale-down window (or no behavior at all).
    """

    def __init__(
        self,
        spec: AutoscalerSpec,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        downscale_window_s: float = DEFAULT_DOWNSCALE_WINDOW_S,
    ) -> None:
        self.spec = spec
        self.tolerance = tolerance
        self.downscale_window_s = downscale_window_s
        self.recommendations: list[tuple[int, float]] = []
        self.scale_up_events: list[_ScaleEvent] = []
        self.scale_down_events: list[_ScaleEvent] = []

    # -- reconcileAutoscaler -----------------------------------------------------------

    def reconcile(
        self, current: int, metric_desired: int, *, now: float, metric_name: str = "cpu"
    ) -> ScaleDecision:
        """From the metric's proposal to the replicas to set; records the scale event."""
        spec = self.spec
        if not self.recommendations:  # recordInitialRecommendation
            self.recommendations.append((current, now))
        if current == 0 and spec.min_replicas != 0:
            return ScaleDecision(
                0, 0, "scaling is disabled since the replica count of the target is zero"
            )
        if current > spec.max_replicas:
            above = "current replicas above maxReplicas"
            decision = ScaleDecision(current, spec.max_replicas, above)
        elif current < spec.min_replicas:
            below = "current replicas below minReplicas"
            decision = ScaleDecision(current, spec.min_replicas, below)
        else:
            desired = max(metric_desired, 0)
            reason = ""
            if desired > current:
                reason = f"{metric_name} above target"
            elif desired < current:
                reason = "all metrics below target"
            if spec.behavior is None:
                desired, condition = self.normalize(current, desired, now=now)
            else:
                desired, condition = self.normalize_with_behaviors(current, desired, now=now)
            decision = ScaleDecision(current, desired, reason or "within tolerance", condition)
        if decision.rescale:
            self.store_scale_event(current, decision.desired, now=now)
        return decision

    # -- without behavior ----------------------------------------------------------------

    def normalize(self, current: int, desired: int, *, now: float) -> tuple[int, str]:
        """normalizeDesiredReplicas: the downscale window, then min/max and the 2x/4 limit."""
        stabilized = self.stabilize(desired, now=now)
        return convert_with_rules(
            current, stabilized, self.spec.min_replicas, self.spec.max_replicas
        )

    def stabilize(self, desired: int, *, now: float) -> int:
        """stabilizeRecommendation: the highest recommendation of the downscale window."""
        cutoff = now - self.downscale_window_s
        highest = desired
        old = None
        for i, (replicas, at) in enumerate(self.recommendations):
            if at < cutoff:
                old = i
            elif replicas > highest:
                highest = replicas
        if old is not None:
            self.recommendations[old] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        return highest

    # -- with behavior ---------------------------------------------------------------------

    def normalize_with_behaviors(
        self, current: int, desired: int, *, now: float
    ) -> tuple[int, str]:
        """normalizeDesiredReplicasWithBehaviors: stabilize, then the rate policies."""
        stabilized = self.stabilize_with_behaviors(current, desired, now=now)
        return self.convert_with_behavior_rate(current, stabilized, now=now)

    def _behavior(self) -> Behavior:
        behavior = self.spec.behavior or Behavior()
        if (
            behavior.scale_down.stabilization_window_s is None
        ):  # maybeInitScaleDownStabilizationWindow
            window = int(self.downscale_window_s)
            behavior = replace(
                behavior, scale_down=replace(behavior.scale_down, stabilization_window_s=window)
            )
        return behavior

    def stabilize_with_behaviors(self, current: int, desired: int, *, now: float) -> int:
        """stabilizeRecommendationWithBehaviors: within [lowest of the up window, highest
        of the down window] of the recommendations, current if already inside."""
        behavior = self._behavior()
        up_cutoff = now - float(behavior.scale_up.stabilization_window_s or 0)
        down_cutoff = now - float(behavior.scale_down.stabilization_window_s or 0)
        up, down = desired, desired
        old = None
        for i, (replicas, at) in enumerate(self.recommendations):
            if at > up_cutoff:
                up = min(replicas, up)
            if at > down_cutoff:
                down = max(replicas, down)
            if at < up_cutoff and at < down_cutoff:
                old = i
        recommendation = current
        if recommendation < up:
            recommendation = up
        if recommendation > down:
            recommendation = down
        if old is not None:
            self.recommendations[old] = (desired, now)
        else:
            self.recommendations.append((desired, now))
        return recommendation

    def convert_with_behavior_rate(
        self, current: int, desired: int, *, now: float
    ) -> tuple[int, str]:
        """convertDesiredReplicasWithBehaviorRate: how far the policies let it go now."""
        behavior = self._behavior()
        spec = self.spec
        if desired > current:
            limit = scale_up_limit(
                current, self.scale_up_events, self.scale_down_events, behavior.scale_up, now=now
            )
            limit = max(limit, current)
            if spec.max_replicas > limit:
                allowed, reason = limit, "ScaleUpLimit"
            else:
                allowed, reason = spec.max_replicas, "TooManyReplicas"
            if desired > allowed:
                return allowed, reason
        elif desired < current:
            limit = scale_down_limit(
                current, self.scale_up_events, self.scale_down_events, behavior.scale_down, now=now
            )
            limit = min(limit, current)
            if spec.min_replicas < limit:
                allowed, reason = limit, "ScaleDownLimit"
            else:
                allowed, reason = spec.min_replicas, "TooFewReplicas"
            if desired < allowed:
                return allowed, reason
        return desired, "DesiredWithinRange"

    def store_scale_event(self, previous: int, new: int, *, now: float) -> None:
        """storeScaleEvent: only with a behavior, reusing an event older than every period."""
        if self.spec.behavior is None:
            return
        behavior = self._behavior()
        if new > previous:
            events, rules, change = self.scale_up_events, behavior.scale_up, new - previous
        else:
            events, rules, change = self.scale_down_events, behavior.scale_down, previous - new
        longest = max((p.period_s for p in rules.policies), default=0)
        for event in events:  # markScaleEventsOutdated
            if event.at < now - longest:
                event.outdated = True
        reuse = [i for i, event in enumerate(events) if event.outdated]
        if reuse:
            events[reuse[-1]] = _ScaleEvent(change, now)
        else:
            events.append(_ScaleEvent(change, now))


def convert_with_rules(
    current: int, desired: int, min_replicas: int, max_replicas: int
) -> tuple[int, str]:
    """convertDesiredReplicasWithRules: min/max and the scale-up limit max(2 x current, 4)."""
    limit = int(max(_SCALE_UP_LIMIT_FACTOR * current, _SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > limit:
        maximum, condition = limit, "ScaleUpLimit"
    else:
        maximum, condition = max_replicas, "TooManyReplicas"
    if desired < min_replicas:
        return min_replicas, "TooFewReplicas"
    if desired > maximum:
        return maximum, condition
    return desired, "DesiredWithinRange"


def _changed_in(period_s: int, events: Sequence[_ScaleEvent], now: float) -> int:
    """getReplicasChangePerPeriod."""
    cutoff = now - period_s
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(
    current: int,
    up_events: Sequence[_ScaleEvent],
    down_events: Sequence[_ScaleEvent],
    rules: ScalingRules,
    *,
    now: float,
) -> int:
    """calculateScaleUpLimitWithScalingRules: the most replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for policy in rules.policies:
        start = (
            current
            - _changed_in(policy.period_s, up_events, now)
            + _changed_in(policy.period_s, down_events, now)
        )
        if policy.type == "Pods":
            proposed = start + policy.value
        else:
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(
    current: int,
    up_events: Sequence[_ScaleEvent],
    down_events: Sequence[_ScaleEvent],
    rules: ScalingRules,
    *,
    now: float,
) -> int:
    """calculateScaleDownLimitWithBehaviors: the fewest replicas the policies allow now."""
    if rules.select_policy == "Disabled":
        return current
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for policy in rules.policies:
        start = (
            current
            - _changed_in(policy.period_s, up_events, now)
            + _changed_in(policy.period_s, down_events, now)
        )
        if policy.type == "Pods":
            proposed = start - policy.value
        else:
            proposed = int(start * (1 - policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def _ceil(value: float) -> int:
    return min(_INT32_MAX, math.ceil(value))
