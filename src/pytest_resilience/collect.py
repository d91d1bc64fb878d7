"""Collect YAML scenarios as test items that get fixtures like any Python test.

Each file becomes a :class:`ScenarioItem`, a ``pytest.Function`` whose body is
:func:`_run` below; pytest's fixture machinery reads that function's signature, so a
YAML scenario gets the same fixtures, teardown order and report hooks as a Python one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .errors import ConfigError
from .scenario import Scenario, load_scenario, run_scenario
from .slo import SLOMonitor
from .targets.base import Target
from .timeline import Timeline

__all__ = ["ScenarioFile", "ScenarioItem"]


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenario = load_scenario(self.path)
        except ConfigError as exc:
            raise self.CollectError(str(exc)) from None
        item = ScenarioItem.from_parent(self, name=self.path.stem, callobj=_run)
        item.scenario = scenario
        item.add_marker(pytest.mark.chaos)
        # Tags select with -k; as markers they would break --strict-markers.
        item.extra_keyword_matches.update(str(tag) for tag in scenario.tags)
        yield item

    class CollectError(Exception):
        pass

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, self.CollectError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Function):
    scenario: Scenario

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"scenario: {self.scenario.title}"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        # Assertion messages of SLOs and faults are the whole story; the runner's frames are noise.
        if isinstance(excinfo.value, AssertionError | ConfigError):
            return f"{self.path}: {self.scenario.title}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)


def _run(
    request: pytest.FixtureRequest,
    chaos_target: Target,
    load: Any,
    slo: SLOMonitor,
    timeline: Timeline,
) -> None:
    item = request.node
    assert isinstance(item, ScenarioItem)
    run_scenario(item.scenario, fixture=request.getfixturevalue, load=load, slo=slo)
