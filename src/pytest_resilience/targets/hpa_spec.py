"""The HorizontalPodAutoscaler's spec (autoscaling/v2), read from a manifest or an object.

What :mod:`.hpa` computes with: min/max replicas, one CPU metric target (a percentage of
the pods' requests, or an average value per pod) and the optional ``behavior``, whose
missing rules get the defaults of kubernetes/kubernetes pkg/apis/autoscaling/v2/defaults.go
(``GenerateHPAScaleUpRules``, ``GenerateHPAScaleDownRules``). Every mistake in a manifest is
a ConfigError naming the file and the dotted field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

__all__ = [
    "AutoscalerSpec",
    "AutoscalerStatus",
    "Behavior",
    "MetricTarget",
    "ScalingPolicy",
    "ScalingRules",
    "default_scale_down",
    "default_scale_up",
]

SelectPolicy = Literal["Max", "Min", "Disabled"]


@dataclass(frozen=True)
class ScalingPolicy:
    """``behavior.scale{Up,Down}.policies[]``: at most ``value`` pods (or percent) per period."""

    type: Literal["Pods", "Percent"]
    value: int
    period_s: int


@dataclass(frozen=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown``; ``None`` window = the controller's."""

    stabilization_window_s: int | None = None
    select_policy: SelectPolicy = "Max"
    policies: tuple[ScalingPolicy, ...] = ()


def default_scale_up(rules: ScalingRules | None) -> ScalingRules:
    """GenerateHPAScaleUpRules: what a missing scaleUp (or a missing part of it) becomes."""
    rules = rules or ScalingRules()
    return ScalingRules(
        stabilization_window_s=(
            0 if rules.stabilization_window_s is None else rules.stabilization_window_s
        ),
        select_policy=rules.select_policy,
        policies=rules.policies
        or (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)),
    )


def default_scale_down(rules: ScalingRules | None) -> ScalingRules:
    """GenerateHPAScaleDownRules (the window stays None: the controller's flag fills it)."""
    rules = rules or ScalingRules()
    return ScalingRules(
        stabilization_window_s=rules.stabilization_window_s,
        select_policy=rules.select_policy,
        policies=rules.policies or (ScalingPolicy("Percent", 100, 15),),
    )


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = field(default_factory=lambda: default_scale_up(None))
    scale_down: ScalingRules = field(default_factory=lambda: default_scale_down(None))


@dataclass(frozen=True)
class MetricTarget:
    """One ``type: Resource`` metric: ``Utilization`` (percent of the pods' requests) or
    ``AverageValue`` (milli-units per pod, e.g. 25 for ``25m`` of CPU)."""

    resource: str = "cpu"
    type: Literal["Utilization", "AverageValue"] = "Utilization"
    average_utilization: int | None = None
    average_value_m: int | None = None

    def describe(self) -> str:
        if self.type == "Utilization":
            return f"{self.resource} {self.average_utilization}% of request"
        return f"{self.resource} {_milli(self.average_value_m or 0)} per pod"


@dataclass(frozen=True)
class AutoscalerSpec:
    """The parts of an autoscaling/v2 HorizontalPodAutoscaler this project acts on."""

    workload: str
    max_replicas: int
    metric: MetricTarget
    min_replicas: int = 1
    behavior: Behavior | None = None
    name: str = ""
    source: str | None = None

    @classmethod
    def from_manifest(cls, path: str | Path) -> AutoscalerSpec:
        """Read a HorizontalPodAutoscaler manifest (YAML); ConfigError naming the field."""
        import yaml

        source = str(path)
        try:
            docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the HPA manifest: {exc}", source=source) from exc
        hpas = [
            d for d in docs if isinstance(d, dict) and d.get("kind") == "HorizontalPodAutoscaler"
        ]
        if len(hpas) != 1:
            raise ConfigError(
                f"expected one HorizontalPodAutoscaler, found {len(hpas)}", source=source
            )
        return cls.from_object(hpas[0], source=source)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any], *, source: str | None = None) -> AutoscalerSpec:
        """An HPA object (as the API serves it, or a manifest); ConfigError naming the field."""
        where = source or "HorizontalPodAutoscaler"

        def fail(message: str, at: str) -> ConfigError:
            return ConfigError(message, source=where, field=at)

        if obj.get("apiVersion") not in (None, "autoscaling/v2"):
            raise fail(f"only autoscaling/v2 is read, got {obj.get('apiVersion')!r}", "apiVersion")
        spec = obj.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        if ref.get("kind") not in ("Deployment", None) or not ref.get("name"):
            raise fail(
                f"scaleTargetRef must name a Deployment, got {dict(ref)!r}", "spec.scaleTargetRef"
            )
        max_replicas = spec.get("maxReplicas")
        min_replicas = spec.get("minReplicas", 1)
        if not isinstance(max_replicas, int) or max_replicas < 1:
            raise fail(f"must be an integer >= 1, got {max_replicas!r}", "spec.maxReplicas")
        if not isinstance(min_replicas, int) or not 0 <= min_replicas <= max_replicas:
            raise fail(
                f"must be an integer in 0..maxReplicas ({max_replicas}), got {min_replicas!r}",
                "spec.minReplicas",
            )
        metrics = spec.get("metrics") or []
        if len(metrics) != 1 or (metrics[0] or {}).get("type") != "Resource":
            raise fail(
                "exactly one metric of type Resource is supported (cpu), got "
                f"{[m.get('type') for m in metrics if isinstance(m, dict)]}",
                "spec.metrics",
            )
        resource = metrics[0].get("resource") or {}
        target = resource.get("target") or {}
        at = "spec.metrics[0].resource.target"
        if resource.get("name") != "cpu":
            raise fail(f"only cpu is supported, got {resource.get('name')!r}", at[:-7] + ".name")
        if target.get("type") == "Utilization":
            value = target.get("averageUtilization")
            if not isinstance(value, int) or value < 1:
                raise fail(f"must be a percentage >= 1, got {value!r}", at + ".averageUtilization")
            metric = MetricTarget("cpu", "Utilization", average_utilization=value)
        elif target.get("type") == "AverageValue":
            milli = _parse_milli(target.get("averageValue"))
            if milli is None or milli < 1:
                raise fail(
                    "must be a CPU quantity such as 25m or 0.5, got "
                    f"{target.get('averageValue')!r}",
                    at + ".averageValue",
                )
            metric = MetricTarget("cpu", "AverageValue", average_value_m=milli)
        else:
            raise fail(
                f"type must be Utilization or AverageValue, got {target.get('type')!r}",
                at + ".type",
            )
        behavior = None
        if spec.get("behavior") is not None:
            raw = spec["behavior"]
            behavior = Behavior(
                scale_up=default_scale_up(
                    _rules(raw.get("scaleUp"), fail, "spec.behavior.scaleUp")
                ),
                scale_down=default_scale_down(
                    _rules(raw.get("scaleDown"), fail, "spec.behavior.scaleDown")
                ),
            )
        return cls(
            workload=str(ref["name"]),
            max_replicas=max_replicas,
            min_replicas=min_replicas,
            metric=metric,
            behavior=behavior,
            name=str((obj.get("metadata") or {}).get("name") or ref["name"]),
            source=source,
        )

    def to_object(
        self, *, namespace: str, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The autoscaling/v2 HorizontalPodAutoscaler object for this spec."""
        target: dict[str, Any] = {"type": self.metric.type}
        if self.metric.type == "Utilization":
            target["averageUtilization"] = self.metric.average_utilization
        else:
            target["averageValue"] = _milli(self.metric.average_value_m or 0)
        spec: dict[str, Any] = {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": self.workload,
            },
            "minReplicas": self.min_replicas,
            "maxReplicas": self.max_replicas,
            "metrics": [
                {"type": "Resource", "resource": {"name": self.metric.resource, "target": target}}
            ],
        }
        if self.behavior is not None:
            spec["behavior"] = {
                "scaleUp": _rules_object(self.behavior.scale_up),
                "scaleDown": _rules_object(self.behavior.scale_down),
            }
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {
                "name": self.name or self.workload,
                "namespace": namespace,
                "labels": dict(labels or {}),
            },
            "spec": spec,
        }


@dataclass(frozen=True)
class AutoscalerStatus:
    """What the autoscaler last saw and decided (``status`` of the HPA)."""

    workload: str
    current_replicas: int
    desired_replicas: int
    #: the metric as the HPA status shows it ("41m per pod", "52% of request"), "" unknown
    current_metric: str = ""
    last_scale_at: float | None = None
    #: why it cannot compute a replica count now (the HPA's ScalingActive=False message:
    #: no metrics yet, metrics-server missing), "" when it can
    problem: str = ""


def _parse_milli(value: Any) -> int | None:
    """A CPU quantity in milli-cores: ``25m`` -> 25, ``0.5`` -> 500, ``1`` -> 1000."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return math.ceil(value * 1000)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("m"):
                return math.ceil(float(text[:-1]))
            return math.ceil(float(text) * 1000)
        except ValueError:
            return None
    return None


def _milli(value: int) -> str:
    return f"{value}m"


def _rules(raw: Any, fail: Any, at: str) -> ScalingRules | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fail(f"must be a mapping, got {raw!r}", at)
    select = raw.get("selectPolicy", "Max")
    if select not in ("Max", "Min", "Disabled"):
        raise fail(f"must be Max, Min or Disabled, got {select!r}", f"{at}.selectPolicy")
    window = raw.get("stabilizationWindowSeconds")
    if window is not None and (not isinstance(window, int) or not 0 <= window <= 3600):
        raise fail(f"must be 0..3600 seconds, got {window!r}", f"{at}.stabilizationWindowSeconds")
    policies = []
    for i, policy in enumerate(raw.get("policies") or []):
        kind, value, period = policy.get("type"), policy.get("value"), policy.get("periodSeconds")
        if kind not in ("Pods", "Percent") or not isinstance(value, int) or value < 1:
            raise fail(
                f"needs type Pods or Percent and a value >= 1, got {policy!r}",
                f"{at}.policies[{i}]",
            )
        if not isinstance(period, int) or not 1 <= period <= 1800:
            raise fail(
                f"must be 1..1800 seconds, got {period!r}", f"{at}.policies[{i}].periodSeconds"
            )
        policies.append(ScalingPolicy(kind, value, period))
    return ScalingRules(window, select, tuple(policies))


def _rules_object(rules: ScalingRules) -> dict[str, Any]:
    out: dict[str, Any] = {
        "selectPolicy": rules.select_policy,
        "policies": [
            {"type": p.type, "value": p.value, "periodSeconds": p.period_s} for p in rules.policies
        ],
    }
    if rules.stabilization_window_s is not None:
        out["stabilizationWindowSeconds"] = rules.stabilization_window_s
    return out
