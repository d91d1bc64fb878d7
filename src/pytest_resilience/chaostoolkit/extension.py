"""The ``pytest-resilience`` entry of an experiment's ``extensions``: our load and SLOs.

Chaos Toolkit carries ``extensions`` as a list of objects, each with a non-empty ``name``
and anything else (chaoslib's ``extension.validate_extensions`` checks only the name), so
an experiment opts in without becoming invalid for ``chaos run``::

    "extensions": [{
        "name": "pytest-resilience",
        "load": {"users": 10, "spawn_rate": 10},
        "slo": [{"error_rate": {"below": 0.05, "window_s": 5}},
                {"latency": {"percentile": 95, "below_ms": 500}}],
        "steady_state_s": 3,
        "recover_within_s": 30,
        "failed_requests_budget": 100
    }]

The item then runs under our load (``load`` fixture, Locust out of process) and judges
the SLOs as our YAML scenarios do (``slo`` fixture, same forms): after the hypothesis
probes before the method they must hold (``assert_holds``), after the method they must
recover within ``recover_within_s`` (``assert_recovers``), and the failed requests stay
within the budget. ``load`` takes the ``load`` fixture's options (a relative
``locustfile`` is read from the experiment's directory). Each judgement is a run in the
journal (type ``slo``) and on the timeline, and the load and SLO series reach the report
as for a scenario. A dry run starts no load and judges no SLO (the timeline says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ConfigError
from ..slo import Objective, SLOMonitor
from ..yamlfile import YamlDocument

__all__ = ["NAME", "ResilienceExtension", "SLOChecks", "SLOJudgement", "parse_extensions"]

NAME = "pytest-resilience"
_LOAD_OPTIONS = ("users", "spawn_rate", "locustfile", "host", "workers", "rps")
_KEYS = ("name", "load", "slo", "steady_state_s", "recover_within_s", "failed_requests_budget")


@dataclass(frozen=True)
class ResilienceExtension:
    load: Mapping[str, Any] = field(default_factory=dict)
    slos: tuple[Objective, ...] = ()
    steady_state_s: float = 5.0
    recover_within_s: float = 30.0
    failed_requests_budget: int | None = None


def parse_extensions(doc: YamlDocument, data: Mapping[str, Any]) -> ResilienceExtension | None:
    """Validate ``extensions`` as chaoslib does, and read ours if the experiment has it."""
    from ..scenario import _objective  # the SLO forms of our scenarios, parsed once

    extensions = data.get("extensions")
    if extensions is None:
        return None
    if not isinstance(extensions, list):
        raise doc.error("extensions must be a list of objects with a name", ["extensions"])
    ours = None
    for i, ext in enumerate(extensions):
        at: list[str | int] = ["extensions", i]
        name = ext.get("name") if isinstance(ext, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise doc.error("All extensions require a non-empty name", [*at, "name"])
        if name != NAME:
            continue
        for key in ext:
            if key not in _KEYS:
                raise doc.error(f"unknown key {key!r}; {NAME} takes {', '.join(_KEYS)}", [*at, key])
        load = _typed(doc, ext, [*at, "load"], dict, {})
        for key in load:
            if key not in _LOAD_OPTIONS:
                raise doc.error(
                    f"unknown load option {key!r}; use {', '.join(_LOAD_OPTIONS)}",
                    [*at, "load", key],
                )
        slos = tuple(
            _objective(doc, item, [*at, "slo", j])
            for j, item in enumerate(_typed(doc, ext, [*at, "slo"], list, []))
        )
        if not slos:
            raise doc.error(f"{NAME} needs at least one SLO to judge the load by", [*at, "slo"])
        names = [o.name for o in slos]
        if len(set(names)) != len(names):
            raise doc.error(f"two SLOs share a name: {names}; give one a 'name'", [*at, "slo"])
        budget = _typed(doc, ext, [*at, "failed_requests_budget"], int, None)
        ours = ResilienceExtension(
            load=load,
            slos=slos,
            steady_state_s=float(_typed(doc, ext, [*at, "steady_state_s"], (int, float), 5)),
            recover_within_s=float(_typed(doc, ext, [*at, "recover_within_s"], (int, float), 30)),
            failed_requests_budget=budget,
        )
    return ours


def _typed(
    doc: YamlDocument,
    ext: Mapping[str, Any],
    where: list[str | int],
    kind: type | tuple[type, ...],
    default: object,
) -> Any:
    key = cast(str, where[-1])  # a field path ends at the key of a mapping
    if key not in ext:
        return default
    value = ext[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise doc.error(f"must be {getattr(kind, '__name__', 'a number')}, got {value!r}", where)
    return value


@dataclass(frozen=True)
class SLOJudgement:
    """One SLO check with the hypothesis; the runner records it as a journal run."""

    name: str
    met: bool
    error: str | None
    start: float
    end: float


class SLOChecks:
    """The runner's :class:`~.run.SLOGate` over the ``slo`` fixture's monitor."""

    def __init__(self, extension: ResilienceExtension, monitor: SLOMonitor) -> None:
        self.extension = extension
        self.monitor = monitor
        for objective in extension.slos:
            monitor.add(objective)

    def before(self) -> list[SLOJudgement]:
        names = ", ".join(o.name for o in self.extension.slos)
        return [_judge(f"SLOs hold: {names}", self.monitor.assert_holds)]

    def after(self) -> list[SLOJudgement]:
        within = self.extension.recover_within_s
        judged = [
            _judge(
                f"SLOs recover within {within:g} s",
                lambda: self.monitor.assert_recovers(within_s=within),
            )
        ]
        budget = self.extension.failed_requests_budget
        if budget is not None:
            judged.append(
                _judge(
                    f"failed requests within {budget}",
                    lambda: self.monitor.assert_failures_within(budget),
                )
            )
        return judged


def _judge(name: str, check: Callable[[], object]) -> SLOJudgement:
    start = time.time()
    try:
        check()
    except AssertionError as exc:  # the SLO's own message: which, worst value, when
        return SLOJudgement(name, False, str(exc).strip(), start, time.time())
    except ConfigError as exc:
        return SLOJudgement(name, False, str(exc), start, time.time())
    return SLOJudgement(name, True, None, start, time.time())
