"""Collect YAML scenarios and Chaos Toolkit experiments as test items with fixtures.

Each file becomes a :class:`ScenarioItem`, a ``pytest.Function`` whose body is
:func:`_run` below; pytest's fixture machinery reads that function's signature, so a
YAML scenario gets the same fixtures, teardown order and report hooks as a Python one.
A Chaos Toolkit experiment (``*.json``, or YAML with its keys) becomes an
:class:`ExperimentItem`, the same item with :func:`_run_experiment` as its body; the two
formats are told apart by their keys (``chaostoolkit.model.experiment_kind``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import ConfigError, ResilienceError
from .faults.base import FaultSession
from .scenario import Scenario, load_scenario, run_scenario
from .slo import SLOMonitor
from .targets.base import Target
from .timeline import Timeline

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from .faults.experiment_rollbacks import ExperimentRollbacks

__all__ = ["ExperimentItem", "ScenarioFile", "ScenarioItem", "extra_paths"]


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            kind = _kind_of(self.path)
        except ConfigError as exc:
            raise self.CollectError(str(exc)) from None
        if kind == "chaostoolkit":
            yield from _experiment_items(self)
            return
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

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, self.CollectError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Function):
    scenario: Scenario

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"scenario: {self.scenario.title}"

    def repr_failure(  # type: ignore[override]  # as pytest.Function's own: Node's style dropped
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str | TerminalRepr:
        # Assertion messages of SLOs and faults are the whole story; the runner's frames are noise.
        # (pytest's Function.repr_failure takes no style: passing one on was an INTERNALERROR.)
        if isinstance(excinfo.value, AssertionError | ConfigError):
            return f"{self.path}: {self.scenario.title}\n{excinfo.value}"
        return super().repr_failure(excinfo)


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


# -- Chaos Toolkit experiments -------------------------------------------------------------


def extra_paths(config: pytest.Config, chaostoolkit_dir: Path | None) -> list[str]:
    """``--chaostoolkit-dir`` is collected when pytest is run without paths of its own."""
    if chaostoolkit_dir is None or config.args_source == pytest.Config.ArgsSource.ARGS:
        return []
    given = [Path(arg).resolve() for arg in config.args]
    if any(chaostoolkit_dir.resolve().is_relative_to(path) for path in given):
        return []  # already inside what pytest walks
    return [str(chaostoolkit_dir)]


def _kind_of(path: Path) -> str:
    from .chaostoolkit.model import experiment_kind, read_document

    doc = read_document(path)
    kind = experiment_kind(doc.data, suffix=path.suffix)
    if kind is None:
        raise ConfigError(
            "is neither a pytest-resilience scenario (a method of `fault:` steps) nor a Chaos "
            "Toolkit experiment (title, description, steady-state-hypothesis probes, a method of "
            "activities); move it out of the collected directory or complete it",
            source=str(path),
        )
    return kind


def _native(config: pytest.Config) -> bool:
    """``--chaostoolkit-native``, read through the options as pytest has them."""
    value = config.getoption("chaostoolkit_native", None)
    return bool(config.getini("chaostoolkit_native") if value is None else value)


def _experiment_items(parent: ScenarioFile) -> Iterator[pytest.Item]:
    from .chaostoolkit.model import load_experiment
    from .chaostoolkit.native import NativeActions, check_arguments
    from .chaostoolkit.providers import MissingExtension, missing_package

    try:
        experiment = load_experiment(parent.path)
    except ConfigError as exc:
        raise parent.CollectError(str(exc)) from None
    native = _native(parent.config)
    if native:
        problems = check_arguments(experiment)
        if problems:
            raise parent.CollectError("\n".join(str(p) for p in problems))
    item = ExperimentItem.from_parent(parent, name=experiment.title, callobj=_run_experiment)
    item.experiment = experiment
    item.add_marker(pytest.mark.chaos)
    item.extra_keyword_matches.update(experiment.tags)
    for where, provider in experiment.python_providers():
        module = str(provider.get("module"))
        if native and NativeActions.maps(provider) is not None:
            continue  # runs through our faults: the extension is not needed
        if missing_package(module, cwd=experiment.cwd):
            # Found without importing it: an extension's import must not run in pytest.
            item.add_marker(pytest.mark.skip(reason=str(MissingExtension(module, where))))
            break
    yield item


class ExperimentItem(pytest.Function):
    """Not a ScenarioItem (whose ``scenario`` is our format), but the same path: a
    Function whose body requests the same fixtures, so ledger, teardown and report are one."""

    experiment: Any  # chaostoolkit.model.Experiment

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"chaostoolkit experiment: {self.experiment.title}"

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, AssertionError | ResilienceError):
            return f"{self.path}: {self.experiment.title}\n{excinfo.value}"
        return super().repr_failure(excinfo)  # pytest 9's Function takes no style


class ExperimentFailed(AssertionError):
    """The experiment deviated, or its steady state did not hold before the method."""


class ExperimentAborted(ConfigError):
    """The experiment could not run to its end (chaoslib's ``aborted``): an error, not a finding."""


class _Armed:
    """The runner's handle on the ledgered rollbacks (see ``faults/experiment_rollbacks``)."""

    def __init__(self, session: FaultSession, fault: ExperimentRollbacks) -> None:
        self._fault = fault
        self._handle = session.inject(fault)

    @property
    def skip_reason(self) -> str | None:
        return self._fault.skip_reason

    @skip_reason.setter
    def skip_reason(self, reason: str | None) -> None:
        self._fault.skip_reason = reason

    def revert(self) -> None:
        self._handle.revert()


def _run_experiment(
    request: pytest.FixtureRequest,
    chaos_target: Target,
    timeline: Timeline,
    _chaos_faults: FaultSession,
) -> None:
    from .chaostoolkit.run import Runner
    from .faults.experiment_rollbacks import ExperimentRollbacks

    item = request.node
    assert isinstance(item, ExperimentItem)
    experiment = item.experiment
    dry_run = _chaos_faults.ctx.dry_run
    native = None
    if _native(request.config):
        from .chaostoolkit.native import NativeActions

        native = NativeActions(chaos_target, _chaos_faults, source=str(experiment.path))
    ours = experiment.resilience
    with contextlib.ExitStack() as stack:
        slos = None
        if ours is not None and dry_run:
            # a dry run touches nothing: no load, so no SLO to judge; the timeline says so
            timeline.mark(
                "experiment_activity",
                "pytest-resilience load and SLOs",
                phase="extension",
                state="not started (dry run)",
                load=dict(ours.load),
                slos=[o.name for o in ours.slos],
            )
        elif ours is not None:
            from .chaostoolkit.extension import SLOChecks

            slos = SLOChecks(ours, request.getfixturevalue("slo"))
            options = dict(ours.load)
            if "locustfile" in options:  # written from the experiment's directory, as paths are
                options["locustfile"] = str(experiment.cwd / options["locustfile"])
            run = stack.enter_context(request.getfixturevalue("load")(**options))
            run.wait_for_samples(max(1, int(ours.steady_state_s)), timeout=ours.steady_state_s + 30)
        runner = Runner(experiment, timeline=timeline, dry_run=dry_run, native=native, slos=slos)
        journal = runner.run(
            arm=lambda spec: _Armed(_chaos_faults, ExperimentRollbacks(spec, runner.play_rollbacks))
        )
    item.user_properties.append(("chaostoolkit_status", journal.verdict))
    if journal.verdict == "completed":
        return
    if journal.verdict == "aborted":
        raise ExperimentAborted(journal.summary())
    raise ExperimentFailed(journal.summary())
