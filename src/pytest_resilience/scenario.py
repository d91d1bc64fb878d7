"""YAML chaos scenarios: the Chaos Toolkit shape, run by the same fixtures as Python tests.

A scenario file reads like an experiment::

    title: Kill one API replica under load
    load: {users: 20, spawn_rate: 20}
    steady-state-hypothesis:
      duration_s: 5
      slos:
        - error_rate: {below: 0.01, window_s: 5}
        - latency: {percentile: 99, below_ms: 2000, window_s: 5}
    method:
      - fault: pod_kill
        args: {selector: app=api, count: 1}
    recovery:
      within_s: 30
      failed_requests_budget: 200

The plugin turns each file into a test item whose body is :func:`run_scenario`, fed the
same fixtures a Python scenario asks for, so teardown, ledger and report are one path.

High load (scenarios/high_load_autoscaling.yaml): ``autoscaler:`` names an HPA manifest
(relative to the scenario file) the workload is under for the scenario's duration (the
``autoscaling`` capability), ``load: {rps: R}`` paces the load, and a ``load_surge`` step
(``args: {rps, scaled_up_within_s, hold_s}``) adds load until the workload scaled up and
its new replicas served (:mod:`.load_surge`).

What the engine did (``expect:``, with ``remediation: true``): the SLOs recovering says
*something* healed the system, not that the engine did, nor that the alert the scenario is
about fired at all (a fault reverted by the scenario heals it too). ``expect: {alert,
strategy, actions, no_page}`` is checked after the recovery with the engine fixture's own
helpers, as a Python scenario would call them (:func:`_check_expectation`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .errors import ConfigError
from .slo import Objective, SLOMonitor
from .targets.hpa_spec import AutoscalerSpec
from .timeline import ALERT_FIRED
from .yamlfile import YamlDocument, dotted, load_yaml

__all__ = [
    "Expectation",
    "ExpectationFailed",
    "FaultStep",
    "Scenario",
    "load_scenario",
    "run_scenario",
]

FAULTS = (
    "pod_kill",
    "network_block",
    "latency",
    "toxic",
    "proxy_down",
    "disk_fill",
    "memory_stress",
    "node_failure",
    "bad_deploy",
    "load_surge",
)
_TOP_KEYS = {
    "autoscaler",
    "title",
    "description",
    "tags",
    "load",
    "steady-state-hypothesis",
    "method",
    "recovery",
    "remediation",
    "expect",
}
#: after the recovery the engine has had the whole method to act: a late action, or its
#: verify still running, gets this much longer before ``expect:`` judges it
_ACTION_GRACE_S = 10.0
_SETTLE_S = 30.0


@dataclass(frozen=True)
class FaultStep:
    fault: str
    args: Mapping[str, Any]
    duration_s: float = 0.0
    #: SLO names that must hold while the fault is active (graceful degradation)
    hold_during: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    path: Path
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    load: Mapping[str, Any] = field(default_factory=dict)
    steady_state_s: float = 5.0
    slos: tuple[Objective, ...] = ()
    method: tuple[FaultStep, ...] = ()
    recover_within_s: float = 30.0
    failed_requests_budget: int | None = None
    remediation: bool = False
    #: the HPA the workload is under for this scenario (``autoscaler:``), None for none
    autoscaler: AutoscalerSpec | None = None
    #: what the engine must have done (``expect:``), None for no check
    expect: Expectation | None = None


@dataclass(frozen=True)
class Expectation:
    """``expect:``: what the remediation engine must have done by the end of the recovery.

    ``alert`` fired after T0 (the replay raised it again), a step of playbook ``strategy``
    ran (those ``actions``, exactly, in order) and fixed it, and ``no_page``: nobody paged.
    ``where`` holds ``path:line`` of each key given, for failure messages.
    """

    alert: str | None = None
    strategy: str | None = None
    actions: tuple[str, ...] | None = None
    no_page: bool = False
    where: Mapping[str, str] = field(default_factory=dict, compare=False)


class ExpectationFailed(AssertionError):
    """The engine did not do what the scenario's ``expect:`` says; names expected vs seen."""


def load_scenario(path: Path) -> Scenario:
    doc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error("a scenario is a mapping with at least 'title' and 'method'")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise doc.error(f"unknown key {key!r}; expected one of {sorted(_TOP_KEYS)}", [key])
    title = _typed(doc, data, ["title"], str, required=True)
    load = _typed(doc, data, ["load"], dict, default={})
    for key in load:
        if key not in ("users", "spawn_rate", "locustfile", "host", "rps", "workers"):
            raise doc.error(f"unknown load option {key!r}", ["load", key])
    steady = _typed(doc, data, ["steady-state-hypothesis"], dict, default={})
    recovery = _typed(doc, data, ["recovery"], dict, default={})
    method = _typed(doc, data, ["method"], list, required=True)
    if not method:
        raise doc.error("method needs at least one fault step", ["method"])
    slos = tuple(
        _objective(doc, item, ["steady-state-hypothesis", "slos", i])
        for i, item in enumerate(
            _typed(doc, steady, ["steady-state-hypothesis", "slos"], list, default=[])
        )
    )
    names = {o.name for o in slos}
    steps = tuple(_step(doc, step, ["method", i], names) for i, step in enumerate(method))
    autoscaler = None
    manifest = _typed(doc, data, ["autoscaler"], str, default=None)
    if manifest is not None:
        try:
            autoscaler = AutoscalerSpec.from_manifest((doc.path.parent / manifest).resolve())
        except ConfigError as exc:
            raise doc.error(f"{exc}", ["autoscaler"]) from None
    if any(step.fault == "load_surge" for step in steps) and autoscaler is None:
        raise doc.error(
            "a load_surge step needs the autoscaler: the workload it watches", ["method"]
        )
    remediation = bool(_typed(doc, data, ["remediation"], bool, default=False))
    return Scenario(
        path=doc.path,
        title=title,
        description=_typed(doc, data, ["description"], str, default=""),
        tags=tuple(_typed(doc, data, ["tags"], list, default=[])),
        load=load,
        steady_state_s=float(
            _typed(doc, steady, ["steady-state-hypothesis", "duration_s"], (int, float), default=5)
        ),
        slos=slos,
        method=steps,
        recover_within_s=float(
            _typed(doc, recovery, ["recovery", "within_s"], (int, float), default=30)
        ),
        failed_requests_budget=_typed(
            doc, recovery, ["recovery", "failed_requests_budget"], int, default=None
        ),
        remediation=remediation,
        autoscaler=autoscaler,
        expect=_expectation(doc, data, remediation=remediation),
    )


def _typed(
    doc: YamlDocument,
    mapping: Mapping[str, Any],
    field_path: list[str | int],
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    key = cast(str, field_path[-1])  # a field path ends at the key of a mapping
    if key not in mapping:
        if required:
            raise doc.error("is required", field_path)
        return default
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise doc.error(f"must be {names}, got {value!r}", field_path)
    return value


_SLO_ARGS = {
    "error_rate": {"below", "window_s", "name"},
    "latency": {"below_ms", "percentile", "window_s", "name"},
    "availability": {"above", "window_s", "name"},
}


def _objective(doc: YamlDocument, item: Any, where: list[str | int]) -> Objective:
    if not isinstance(item, dict) or len(item) != 1:
        raise doc.error(f"an SLO is one of {sorted(_SLO_ARGS)} with its arguments", where)
    ((signal, args),) = item.items()
    if signal not in _SLO_ARGS:
        raise doc.error(f"unknown SLO {signal!r}; use one of {sorted(_SLO_ARGS)}", where)
    if not isinstance(args, dict):
        raise doc.error("SLO arguments must be a mapping", [*where, signal])
    for key in args:
        if key not in _SLO_ARGS[signal]:
            raise doc.error(
                f"unknown argument {key!r}; {signal} takes {sorted(_SLO_ARGS[signal])}",
                [*where, signal, key],
            )
    window = float(args.get("window_s", 5))
    try:
        if signal == "error_rate":
            return Objective(
                args.get("name", "error_rate"), "error_rate", float(args["below"]), window
            )
        if signal == "latency":
            percentile = int(args.get("percentile", 99))
            return Objective(
                args.get("name", f"p{percentile}_latency"),
                "latency",
                float(args["below_ms"]),
                window,
                percentile,
            )
        return Objective(
            args.get("name", "availability"), "availability", float(args["above"]), window
        )
    except KeyError as exc:
        raise doc.error(f"missing argument {exc.args[0]!r}", [*where, signal]) from None
    except ConfigError as exc:
        raise doc.error(exc.message, [*where, signal]) from None


_EXPECT_KEYS = ("alert", "strategy", "actions", "no_page")


def _expectation(
    doc: YamlDocument, data: Mapping[str, Any], *, remediation: bool
) -> Expectation | None:
    block = _typed(doc, data, ["expect"], dict, default=None)
    if not block:
        return None
    for key in block:
        if key not in ("alert", "strategy", "actions", "no_page"):
            raise doc.error(
                f"unknown key {key!r} in expect; use {list(_EXPECT_KEYS)}", ["expect", key]
            )
    if not remediation:
        raise doc.error(
            "expect checks what the remediation engine did: set remediation: true at the "
            "top level, or drop expect",
            ["expect"],
        )
    names: dict[str, str | None] = {}
    for key in ("alert", "strategy"):
        name = _typed(doc, block, ["expect", key], str, default=None)
        if name is not None and not name.strip():
            raise doc.error(f"must name the {key}, got {name!r}", ["expect", key])
        names[key] = name
    actions = _typed(doc, block, ["expect", "actions"], list, default=None)
    if actions is not None:
        if not actions:
            raise doc.error("needs at least one action name", ["expect", "actions"])
        for i, action in enumerate(actions):
            if not isinstance(action, str) or not action.strip():
                raise doc.error(
                    f"an action is a name (e.g. rollback), got {action!r}", ["expect", "actions", i]
                )
        if names["strategy"] is None:
            raise doc.error(
                "actions are those of one step of a playbook: name it in expect.strategy "
                "(the playbook's name, e.g. 'High Error Rate')",
                ["expect", "actions"],
            )
    where: dict[str, str] = {}
    for key in block:
        line = doc.line_in(block, key)
        where[key] = f"{doc.path}:{line}" if line else str(doc.path)
    return Expectation(
        alert=names["alert"],
        strategy=names["strategy"],
        actions=tuple(actions) if actions is not None else None,
        no_page=_typed(doc, block, ["expect", "no_page"], bool, default=False),
        where=where,
    )


def _step(doc: YamlDocument, step: Any, where: list[str | int], slo_names: set[str]) -> FaultStep:
    if not isinstance(step, dict):
        raise doc.error("a method step is a mapping with 'fault' and 'args'", where)
    for key in step:
        if key not in ("fault", "args", "duration_s", "hold_during"):
            raise doc.error(f"unknown key {key!r} in a method step", [*where, key])
    fault = _typed(doc, step, [*where, "fault"], str, required=True)
    if fault not in FAULTS:
        raise doc.error(f"unknown fault {fault!r}; use one of {list(FAULTS)}", [*where, "fault"])
    hold = tuple(_typed(doc, step, [*where, "hold_during"], list, default=[]))
    for name in hold:
        if name not in slo_names:
            raise doc.error(
                f"hold_during names SLO {name!r}, not declared in the steady-state hypothesis",
                [*where, "hold_during"],
            )
    return FaultStep(
        fault=fault,
        args=_typed(doc, step, [*where, "args"], dict, default={}),
        duration_s=float(_typed(doc, step, [*where, "duration_s"], (int, float), default=0)),
        hold_during=hold,
    )


def run_scenario(
    scenario: Scenario,
    *,
    fixture: Callable[[str], Any],
    load: Callable[..., Any],
    slo: SLOMonitor,
) -> None:
    """Steady state, then each fault in order, then recovery: the experiment's method."""
    for objective in scenario.slos:
        slo.add(objective)
    if scenario.remediation:
        fixture("remediation_engine")  # the engine watches from before the first fault
    if scenario.autoscaler is None:
        _run_method(scenario, fixture=fixture, load=load, slo=slo)
        return
    from .load_surge import autoscaled

    with autoscaled(fixture("chaos_target"), scenario.autoscaler):
        _run_method(scenario, fixture=fixture, load=load, slo=slo)


def _run_method(
    scenario: Scenario,
    *,
    fixture: Callable[[str], Any],
    load: Callable[..., Any],
    slo: SLOMonitor,
) -> None:
    with load(**scenario.load) as run:
        run.wait_for_samples(
            max(1, int(scenario.steady_state_s)), timeout=scenario.steady_state_s + 30
        )
        if scenario.slos:
            slo.assert_holds()  # the steady-state hypothesis: no point breaking a broken system
        for step in scenario.method:
            started = time.time()
            if step.fault == "load_surge":  # held while it lasts: the SLOs count from its start
                from .load_surge import LoadSurge

                assert scenario.autoscaler is not None  # load_scenario checked it
                handle = LoadSurge(
                    target=fixture("chaos_target"),
                    timeline=fixture("timeline"),
                    load=load,
                    workload=scenario.autoscaler.workload,
                    **step.args,
                )
            else:
                handle = fixture(step.fault)(**step.args)
                started = time.time()
            if step.duration_s:
                time.sleep(step.duration_s)  # the fault's stated duration, not a synchronisation
            if step.hold_during:
                slo.assert_holds(*step.hold_during, since=started)
            handle.revert()
        if scenario.slos:
            slo.assert_recovers(within_s=scenario.recover_within_s)
        if scenario.failed_requests_budget is not None:
            slo.assert_failures_within(scenario.failed_requests_budget)
        if scenario.expect is not None:  # under load still: the engine's verify reads it
            _check_expectation(scenario, scenario.expect, fixture=fixture)


def _check_expectation(
    scenario: Scenario, expect: Expectation, *, fixture: Callable[[str], Any]
) -> None:
    """``expect:`` against the timeline and the engine, by the helpers Python scenarios call."""
    engine = fixture("remediation_engine")
    timeline = fixture("timeline")

    def failed(key: str, expected: str, seen: str) -> ExpectationFailed:
        where = expect.where.get(key, str(scenario.path))
        return ExpectationFailed(
            f"{where}, field {dotted(['expect', key])!r}: expected {expected}; seen: {seen}"
        )

    if expect.alert is not None:
        t0 = timeline.t0

        def fired() -> list[str]:
            return [e.name for e in timeline.events(ALERT_FIRED, since=t0)]

        if not timeline.wait_for(lambda: expect.alert in fired(), timeout=_ACTION_GRACE_S):
            names = ", ".join(dict.fromkeys(fired())) or "no alert"
            raise failed("alert", f"alert {expect.alert!r} to fire after T0", f"fired: {names}")
    key = "actions" if expect.actions is not None else "strategy"
    wanted = f"strategy {expect.strategy!r}" + (
        f" to run {list(expect.actions)}" if expect.actions is not None else " to run"
    )
    if expect.strategy is not None:
        try:
            engine.wait_for_action(expect.strategy, timeout=_ACTION_GRACE_S)
        except AssertionError as exc:
            raise failed(key, f"{wanted} and fix it", f"{_ran(engine)} ({exc})") from None
    if expect.strategy is not None or (expect.no_page and engine.incidents()):
        try:
            engine.wait_settled(timeout=_SETTLE_S)
        except AssertionError as exc:
            raise failed(
                key if expect.strategy is not None else "no_page",
                f"every incident closed within {_SETTLE_S:g} s of the recovery",
                str(exc),
            ) from None
    if expect.strategy is not None:
        try:
            engine.assert_strategy_ran(
                expect.strategy,
                actions=list(expect.actions) if expect.actions is not None else None,
            )
        except AssertionError as exc:
            raise failed(key, f"{wanted} and fix it", f"{_ran(engine)} ({exc})") from None
    if expect.no_page:
        try:
            engine.assert_no_page()
        except AssertionError as exc:
            raise failed("no_page", "nobody paged", str(exc)) from None


def _ran(engine: Any) -> str:
    """The steps the engine ran, for an ``expect:`` failure: what was seen."""
    runs = engine.strategies_run()
    if not runs:
        return "no strategy ran"
    return "; ".join(
        f"{r.strategy!r} step {r.step!r} ran {list(r.actions)}, {r.outcome}" for r in runs
    )
