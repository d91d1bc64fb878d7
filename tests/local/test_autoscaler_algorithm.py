"""The HPA arithmetic of targets/hpa.py against the cases of Kubernetes' own tests.

Each case below is one of kubernetes/kubernetes pkg/controller/podautoscaler tests, named
as there, with its numbers: replica_calculator_test.go (``TestReplicaCalc*``: pods with
CPU levels, requests, readiness, phases; ``numContainersPerPod`` doubles both the levels
and the requests there, which leaves every ratio and percentage as here) and
horizontal_test.go (``TestNormalizeDesiredReplicas``: the 5-minute downscale window;
``TestScalingWithRules``: the behavior policies over past scale events, spread by
``generateEventsUniformDistribution``). Times are passed in, so nothing waits.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_resilience.errors import ConfigError
from pytest_resilience.targets.hpa import (
    AutoscalerSpec,
    Behavior,
    HorizontalController,
    MetricTarget,
    PodSample,
    ScalingPolicy,
    ScalingRules,
    _ScaleEvent,
    default_scale_down,
    default_scale_up,
    resource_replicas,
)

NOW = 10_000.0
INIT_S = 120.0  # defaultTestingCPUInitializationPeriod
DELAY_S = 10.0  # defaultTestingDelayOfInitialReadinessStatus
COOL = NOW - 600.0  # coolCPUCreationTime: started long before the initialization period
HOT = NOW - 30.0  # hotCPUCreationTime: still initialising


def pods(levels, *, requests=None, ready=None, phases=None, deleting=None, starts=None, n=None):
    """The harness of replica_calculator_test.go: pod i has levels[i] (None past the
    list: no metric), its Ready condition's transition at its start."""
    n = n or max(len(levels), len(requests or []), len(ready or []), len(phases or []))
    out = []
    for i in range(n):
        start = (starts or [COOL] * n)[i]
        out.append(
            PodSample(
                name=f"pod-{i}",
                usage_m=levels[i] if i < len(levels) else None,
                request_m=(requests or [1000] * n)[i] if requests != [] else None,
                phase=(phases or ["Running"] * n)[i],
                ready=(ready or [True] * n)[i],
                deleting=(deleting or [False] * n)[i],
                started_at=start,
                ready_since=start,
                metric_at=NOW,
                metric_window_s=60.0,
            )
        )
    return out


def utilization(percent: int) -> MetricTarget:
    return MetricTarget("cpu", "Utilization", average_utilization=percent)


def average(milli: int) -> MetricTarget:
    return MetricTarget("cpu", "AverageValue", average_value_m=milli)


def calc(current, metric, samples):
    return resource_replicas(
        current, metric, samples, now=NOW, cpu_initialization_s=INIT_S, readiness_delay_s=DELAY_S
    )


T, F = True, False


@pytest.mark.parametrize(
    ("case", "current", "metric", "samples", "expected"),
    [
        ("TestReplicaCalcScaleUp", 3, utilization(30), pods([300, 500, 700]), (5, 50)),
        (
            "TestReplicaCalcScaleUpUnreadyLessScale",
            3,
            utilization(30),
            pods([300, 500, 700], ready=[F, T, T]),
            (4, 60),
        ),
        (
            "TestReplicaCalcScaleUpHotCpuLessScale",
            3,
            utilization(30),
            pods([300, 500, 700], starts=[HOT, COOL, COOL]),
            (4, 60),
        ),
        (
            "TestReplicaCalcScaleUpUnreadyNoScale",
            3,
            utilization(30),
            pods([400, 500, 700], ready=[T, F, F]),
            (3, 40),
        ),
        (
            "TestReplicaCalcScaleUpIgnoresFailedPods",
            2,
            utilization(30),
            pods([500, 700], ready=[T, T, F, F], phases=["Running"] * 2 + ["Failed"] * 2),
            (4, 60),
        ),
        (
            "TestReplicaCalcScaleUpIgnoresDeletionPods",
            2,
            utilization(30),
            pods([500, 700], ready=[T, T, F, F], deleting=[F, F, T, T]),
            (4, 60),
        ),
        (
            "TestReplicaCalcScaleDown",
            5,
            utilization(50),
            pods([100, 300, 500, 250, 250]),
            (3, 28),
        ),
        (
            "TestReplicaCalcScaleDownExcludeUnreadyPods",
            5,
            utilization(50),
            pods([100, 300, 500, 250, 250], ready=[T, T, T, F, F]),
            (2, 30),
        ),
        (
            "TestReplicaCalcScaleDownExcludeUnscheduledPods",
            5,
            utilization(50),
            pods([100], ready=[T, F, F, F, F], phases=["Running"] + ["Pending"] * 4),
            (1, 10),
        ),
        (
            "TestReplicaCalcScaleDownIgnoreHotCpuPods",
            5,
            utilization(50),
            pods([100, 300, 500, 250, 250], starts=[COOL, COOL, COOL, HOT, HOT]),
            (2, 30),
        ),
        (
            "TestReplicaCalcScaleDownIgnoresFailedPods",
            5,
            utilization(50),
            pods(
                [100, 300, 500, 250, 250],
                ready=[T] * 5 + [F, F],
                phases=["Running"] * 5 + ["Failed"] * 2,
            ),
            (3, 28),
        ),
        (
            "TestReplicaCalcTolerance",
            3,
            utilization(100),
            pods([1010, 1030, 1020], requests=[900, 1000, 1100]),
            (3, 102),
        ),
        ("TestReplicaCalcMissingMetrics", 4, utilization(100), pods([400, 95], n=4), (3, 24)),
        # the pods-metric ("qps") cases: the same arithmetic as an AverageValue cpu target
        ("TestReplicaCalcScaleUpCM", 3, average(15000), pods([20000, 10000, 30000]), (4, 20000)),
        ("TestReplicaCalcScaleDownCM", 5, average(20000), pods([12000] * 5), (3, 12000)),
        ("TestReplicaCalcToleranceCM", 3, average(20000), pods([20000, 21000, 21000]), (3, 20666)),
        (
            "TestPlainMetricReplicaCalcMissingMetricsNoChangeEq",
            5,
            average(20000),
            pods([20000, 19000, 21000], n=5),
            (5, 20000),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_replica_calculator_matches_kubernetes(case, current, metric, samples, expected):
    assert calc(current, metric, samples) == expected


def test_a_utilization_target_needs_every_request_as_kubernetes_does():
    """TestReplicaCalcEmptyCPURequest: a pod without a cpu request is an error."""
    with pytest.raises(ValueError, match="missing request for"):
        calc(1, utilization(100), pods([200], requests=[]))


def test_no_metric_for_any_counted_pod_computes_nothing():
    with pytest.raises(ValueError, match="did not receive metrics"):
        calc(4, utilization(100), pods([], n=3))


def spec(min_replicas=1, max_replicas=1000, *, up=None, down=None, behavior=True):
    return AutoscalerSpec(
        workload="api",
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        metric=average(100),
        behavior=Behavior(default_scale_up(up), default_scale_down(down)) if behavior else None,
    )


@pytest.mark.parametrize(
    ("name", "recommendations", "desired", "expected", "log_length"),
    [
        ("empty log", [], 5, 5, 1),
        ("stabilize", [(4, -120), (5, -60)], 3, 5, 3),
        ("no stabilize", [(1, -120), (2, -60)], 3, 3, 3),
        ("no stabilize - old recommendations", [(10, -600), (9, -540)], 3, 3, 2),
        ("stabilize - old recommendations", [(10, -600), (4, -60), (5, -120), (9, -540)], 3, 5, 4),
    ],
)
def test_downscale_stabilization_as_TestNormalizeDesiredReplicas(
    name, recommendations, desired, expected, log_length
):
    controller = HorizontalController(spec(behavior=False), downscale_window_s=300)
    controller.recommendations = [(r, NOW + ago) for r, ago in recommendations]
    assert controller.stabilize(desired, now=NOW) == expected
    assert len(controller.recommendations) == log_length


def rules(pods_value, pods_period, percent, percent_period, window, select="Max"):
    """generateScalingRules of horizontal_test.go."""
    policies = []
    if pods_value:
        policies.append(ScalingPolicy("Pods", pods_value, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(window, select, tuple(policies))


def spread(changes, period_s):
    """generateEventsUniformDistribution: events in the middle of equal segments of the
    last ``period_s`` seconds, oldest first."""
    segment = period_s / len(changes)
    return [
        _ScaleEvent(change, NOW - (period_s - segment * (i + 1) + segment / 2))
        for i, change in enumerate(changes)
    ]


SCALING_WITH_RULES = [
    # name, up events, down events, min, max, up rules, down rules, current, desired, expected
    (
        "prenormalized desired replicas within range",
        [],
        [],
        3,
        8,
        None,
        None,
        5,
        7,
        7,
        "DesiredWithinRange",
    ),
    (
        "prenormalized desired replicas < minReplicas",
        [],
        [],
        2,
        8,
        None,
        None,
        3,
        1,
        2,
        "TooFewReplicas",
    ),
    (
        "... within range when minReplicas is 0",
        [],
        [],
        0,
        10,
        None,
        None,
        1,
        0,
        0,
        "DesiredWithinRange",
    ),
    (
        "maxReplicas is the limit because maxReplicas < scaleUpLimit",
        [],
        [],
        1,
        10,
        None,
        None,
        20,
        1000,
        10,
        "TooManyReplicas",
    ),
    (
        "desired replica count is more than the maximum replica count",
        [],
        [],
        100,
        150,
        None,
        None,
        100,
        1000,
        150,
        "TooManyReplicas",
    ),
    (
        "scaleUpLimit is the limit ... with user policies",
        [],
        [],
        1,
        2000,
        rules(0, 0, 1, 60, 0),
        None,
        3,
        1000,
        4,
        "ScaleUpLimit",
    ),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    (
        "scaleUp with pods policy larger than percent policy",
        [],
        [],
        1,
        1000,
        rules(100, 60, 100, 60, 0),
        None,
        10,
        500,
        110,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy larger than pods policy",
        [],
        [],
        1,
        1000,
        rules(2, 60, 100, 60, 0),
        None,
        10,
        500,
        20,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with spec MaxReplicas limitation with large pod policy",
        [],
        [],
        1,
        1000,
        rules(100, 60, 0, 0, 0),
        None,
        10,
        50,
        50,
        "DesiredWithinRange",
    ),
    (
        "scaleUp with pod policy limitation",
        [],
        [],
        1,
        1000,
        rules(30, 60, 0, 0, 0),
        None,
        10,
        50,
        40,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy limitation",
        [],
        [],
        1,
        1000,
        rules(0, 0, 200, 60, 0),
        None,
        10,
        50,
        30,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with percent policy larger than pod policy",
        [],
        [],
        1,
        1000,
        None,
        rules(20, 60, 1, 60, 300),
        100,
        2,
        80,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with pod policy larger than percent policy",
        [],
        [],
        1,
        1000,
        None,
        rules(2, 60, 1, 60, 300),
        100,
        2,
        98,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large pod policy",
        [],
        [],
        1,
        1000,
        None,
        rules(100, 60, 0, 0, 300),
        10,
        0,
        1,
        "TooFewReplicas",
    ),
    (
        "scaleDown with spec MinReplicas limitation with large percent policy",
        [],
        [],
        5,
        1000,
        None,
        rules(0, 0, 100, 60, 300),
        10,
        2,
        5,
        "TooFewReplicas",
    ),
    (
        "scaleDown with pod policy limitation",
        [],
        [],
        1,
        1000,
        None,
        rules(5, 60, 0, 0, 300),
        10,
        2,
        5,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation",
        [],
        [],
        1,
        1000,
        None,
        rules(0, 0, 50, 60, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleUp ... large pod policy and events",
        spread([1, 5, 9], 120),
        [],
        1,
        200,
        rules(300, 60, 0, 0, 0),
        None,
        100,
        500,
        200,
        "TooManyReplicas",
    ),
    (
        "scaleUp ... a lot of recent scale up events",
        spread([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(5, 120, 0, 0, 0),
        None,
        100,
        500,
        100,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with pod policy and previous scale up events",
        spread([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(150, 120, 0, 0, 0),
        None,
        100,
        500,
        235,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up events",
        spread([1, 5, 9], 120),
        [],
        1,
        1000,
        rules(0, 0, 200, 120, 0),
        None,
        100,
        500,
        255,
        "ScaleUpLimit",
    ),
    (
        "scaleUp with percent policy and previous scale up and down events",
        spread([4], 120),
        spread([2], 120),
        1,
        1000,
        rules(0, 0, 300, 300, 0),
        None,
        6,
        24,
        16,
        "ScaleUpLimit",
    ),
    (
        "scaleDown with default policy and previous events",
        [],
        spread([1, 5, 9], 120),
        1,
        1000,
        None,
        None,
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "scaleDown with pod policy limitation and previous events",
        [],
        spread([1, 5, 9], 120),
        1,
        1000,
        None,
        rules(5, 120, 0, 0, 300),
        100,
        2,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy limitation and previous events",
        [],
        spread([2, 4, 6], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 120, 300),
        100,
        0,
        56,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with percent policy and previous scale up and down events",
        spread([2], 120),
        spread([4], 120),
        1,
        1000,
        None,
        rules(0, 0, 50, 180, 0),
        10,
        1,
        6,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with previous events preventing further scale down",
        [],
        spread([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 10, 120, 300),
        100,
        0,
        100,
        "ScaleDownLimit",
    ),
    (
        "scaleDown with with previous events still allowing more scale down",
        [],
        spread([10, 10, 10], 120),
        1,
        1000,
        None,
        rules(0, 0, 1000, 120, 300),
        10,
        5,
        5,
        "DesiredWithinRange",
    ),
    (
        "check that events were marked 'outdated' for two different policies ... for up",
        spread([8, 12, 9, 11], 120),
        [],
        1,
        1000,
        rules(1000, 30, 100, 60, 0),
        None,
        100,
        200,
        200,
        "DesiredWithinRange",
    ),
]


@pytest.mark.parametrize(
    (
        "name",
        "up_events",
        "down_events",
        "low",
        "high",
        "up",
        "down",
        "current",
        "desired",
        "expected",
        "condition",
    ),
    SCALING_WITH_RULES,
    ids=[case[0] for case in SCALING_WITH_RULES],
)
def test_behavior_rate_as_TestScalingWithRules(
    name, up_events, down_events, low, high, up, down, current, desired, expected, condition
):
    controller = HorizontalController(spec(low, high, up=up, down=down))
    controller.scale_up_events = list(up_events)
    controller.scale_down_events = list(down_events)
    got = controller.convert_with_behavior_rate(current, desired, now=NOW)
    assert got == (expected, condition)


def test_without_behavior_the_scale_up_limit_is_twice_current_or_four():
    """convertDesiredReplicasWithRules, as reconcileAutoscaler applies it: 3 -> at most 6,
    1 -> at most 4; then min and max."""
    controller = HorizontalController(spec(2, 10, behavior=False))
    assert controller.reconcile(3, 9, now=NOW).desired == 6
    assert HorizontalController(spec(1, 10, behavior=False)).reconcile(1, 9, now=NOW).desired == 4
    assert HorizontalController(spec(2, 10, behavior=False)).reconcile(1, 1, now=NOW).desired == 2
    assert HorizontalController(spec(2, 5, behavior=False)).reconcile(8, 8, now=NOW).desired == 5


def test_a_workload_at_zero_replicas_is_left_alone():
    decision = HorizontalController(spec(1, 10)).reconcile(0, 5, now=NOW)
    assert (decision.desired, decision.rescale) == (0, False)


def test_scale_down_waits_out_the_stabilization_window_and_scale_up_does_not():
    """The demo HPA's shape: scale-up window 0, scale-down 300 s; one reconcile per 15 s."""
    controller = HorizontalController(
        spec(3, 6, up=rules(3, 15, 0, 0, 0), down=rules(1, 60, 0, 0, 300))
    )
    assert controller.reconcile(3, 3, now=NOW).desired == 3
    up = controller.reconcile(3, 8, now=NOW + 15)
    assert (up.desired, up.condition) == (6, "TooManyReplicas")
    for t in range(30, 300, 15):  # load gone: the metric asks for 3, the window holds 8
        assert controller.reconcile(6, 3, now=NOW + t).desired == 6
    assert controller.reconcile(6, 3, now=NOW + 330).desired == 5  # 1 pod per 60 s


def test_the_demo_manifest_is_read_with_its_behavior_and_errors_name_the_field(tmp_path):
    demo = AutoscalerSpec.from_manifest("deploy/k8s/autoscaling/api-hpa.yaml")
    assert (demo.workload, demo.min_replicas, demo.max_replicas) == ("api", 3, 6)
    assert demo.metric == average(12)
    assert demo.behavior is not None and demo.behavior.scale_down.stabilization_window_s == 300
    again = AutoscalerSpec.from_object(demo.to_object(namespace="chaos-demo"))
    assert replace(again, source=None) == replace(demo, source=None)
    broken = tmp_path / "hpa.yaml"
    broken.write_text(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: api}\n"
        "spec:\n  scaleTargetRef: {kind: Deployment, name: api}\n  maxReplicas: 4\n"
        "  metrics: [{type: Resource, resource: {name: cpu, target: {type: AverageValue,"
        " averageValue: lots}}}]\n"
    )
    with pytest.raises(ConfigError) as info:
        AutoscalerSpec.from_manifest(broken)
    assert info.value.field == "spec.metrics[0].resource.target.averageValue"
    assert str(broken) in str(info.value) and "'lots'" in str(info.value)
