"""pytest glue only: options, markers and hooks. Logic lives in the rooms.

The fixtures are in fixtures.py, which this plugin requires (``pytest_plugins``), so
``-p no:resilience`` turns both off; the stash keys they share live in stash_keys.py.
Heavy clients (kubernetes, locust, prometheus-api-client) are imported only where they
are used, so installing this plugin costs other test suites little.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from .item_results import record_result, settle_interrupted, twin_of
from .outcomes import record_outcome
from .report_redaction import redact_report
from .run import ChaosRun
from .settings import ChaosSettings, add_options
from .short_failure import shorten_failure
from .stash_keys import (
    EXPECTED_KEY,
    PREFLIGHT_KEY,
    PREVIOUS_SIGTERM_KEY,
    RUN_KEY,
    TIMELINE_KEY,
    VERDICTS_KEY,
)

pytest_plugins = ["pytest_resilience.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos(requires=[...], needs=[...]): a chaos scenario (fault under load, SLO "
        "checks); requires names target capabilities (skipped where the target lacks one), "
        "needs the machine's servers and tools (skipped where missing, failed under CI; "
        "see --chaos-doctor)",
    )
    config.stash[RUN_KEY] = ChaosRun(ChaosSettings.from_config(config))
    experiments = config.stash[RUN_KEY].settings.chaostoolkit_dir
    if experiments is not None:  # collect.py is heavy: a suite without chaos never pays it
        from .collect import extra_paths

        config.args.extend(extra_paths(config, experiments))
    # SIGTERM (CI cancelling a job) becomes KeyboardInterrupt, so pytest runs every
    # fixture teardown and each fault is reverted, as on Ctrl-C.
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        config.stash[PREVIOUS_SIGTERM_KEY] = signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if "pytest_resilience.faults.base" in sys.modules:  # else no fault session ever existed
        from .faults.base import revert_every_session

        revert_every_session()
    if PREVIOUS_SIGTERM_KEY in config.stash:
        signal.signal(signal.SIGTERM, config.stash[PREVIOUS_SIGTERM_KEY])
    if RUN_KEY in config.stash:
        config.stash[RUN_KEY].close()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    # Runs before pytest_configure: read the options here, then leave.
    if not config.getoption("chaos_cleanup") and not config.getini("chaos_cleanup"):
        return None
    from .cleanup import cleanup

    run = ChaosRun(ChaosSettings.from_config(config))
    try:
        return cleanup(run)
    finally:
        run.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    run = parent.config.stash.get(RUN_KEY, None)
    if not _scenario_candidate(file_path, run.settings.chaostoolkit_dir if run else None):
        return None
    from .collect import ScenarioFile  # heavy: imported only for a candidate

    return ScenarioFile.from_parent(parent, path=file_path)


def _scenario_candidate(file_path: Path, chaostoolkit_dir: Path | None) -> bool:
    """Whether a file may be a scenario or an experiment: YAML or JSON under ``scenarios/``,
    or under ``--chaostoolkit-dir``; its content decides later (collect.py)."""
    if file_path.suffix not in (".yaml", ".yml", ".json"):
        return False
    if "scenarios" in file_path.parts:
        return True
    return chaostoolkit_dir is not None and file_path.is_relative_to(chaostoolkit_dir)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What the target cannot do at all is skipped, naming the capability (CI too); what
    this machine lacks for a fault is skipped naming it and the install line, and under CI
    fails at setup instead (no green by skipping)."""
    from .capabilities import faults_used, skip_lacking
    from .preflight import in_ci, verdicts_for

    settings = config.stash[RUN_KEY].settings
    if settings.remediation_baseline:
        from .baseline import add_baselines

        add_baselines(items)  # after -k/-m: each selected engine item gets its twin
    unsupported = {item.nodeid: reason for item, reason in skip_lacking(items, settings)}
    chaos = [item for item in items if item.get_closest_marker("chaos") is not None]
    asked = [(item.nodeid, faults_used(item), _named_needs(item)) for item in chaos]
    verdicts = verdicts_for(settings.target, asked, unsupported)
    config.stash[VERDICTS_KEY] = verdicts
    for item, verdict in zip(chaos, verdicts, strict=True):
        if verdict.runs or verdict.unsupported:
            continue
        if in_ci():
            item.stash[PREFLIGHT_KEY] = verdict.reason()
        else:
            item.add_marker(pytest.mark.skip(reason=verdict.reason()))


def _named_needs(item: pytest.Item) -> list[str]:
    """What ``@pytest.mark.chaos(needs=[...])`` (on the test or one of its params) names."""
    from .preflight import check_names

    named: list[str] = []
    for mark in item.iter_markers("chaos"):
        asked = mark.kwargs.get("needs", ())
        try:
            named += check_names([asked] if isinstance(asked, str) else asked, where=item.nodeid)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    return named


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if PREFLIGHT_KEY in item.stash:
        reason = item.stash[PREFLIGHT_KEY]
        pytest.fail(f"{reason}; CI is set, so this is an error, not a skip", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """The safety net behind the preflight: a fault injected by hand (``inject(...)``)
    that finds a privilege missing skips its scenario, naming it; under CI it fails.

    A ``--remediation-baseline`` run that fails after T0 (no recovery without the engine)
    passes with the failure recorded: see baseline.py."""
    from .errors import PrivilegeError
    from .preflight import in_ci

    try:
        return (yield)
    except PrivilegeError as exc:
        if item.get_closest_marker("chaos") is None or in_ci():
            raise
        reason = str(exc)
    except AssertionError as exc:
        if twin_of(item) is None:
            raise
        from .baseline import expected_without_automation

        expected = expected_without_automation(exc, item.stash.get(TIMELINE_KEY, None))
        if expected is None:
            raise
        item.stash[EXPECTED_KEY] = expected
        return None
    pytest.skip(f"this machine cannot inject the scenario's fault: {reason}")


def pytest_report_header(config: pytest.Config) -> str | None:
    """Which cluster a kubernetes run will break: context, API server URL, namespace."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.settings.target != "kubernetes":
        return None
    from .targets.kubernetes import describe_target

    return describe_target(context=run.settings.kube_context, namespace=run.settings.namespace)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--chaos-doctor``: print the checks and verdicts, run nothing."""
    run = session.config.stash[RUN_KEY]
    if not run.settings.doctor:
        return None
    from .preflight import doctor_lines

    reporter: pytest.TerminalReporter | None
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in doctor_lines(run.settings, session.config.stash.get(VERDICTS_KEY, [])):
        if reporter is None:  # -p no:terminal: nothing to print to
            break
        reporter.write_line(line)
    return True


# -- reporting ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    shorten_failure(report, item, call)
    record_outcome(item, report)
    if TIMELINE_KEY in item.stash:  # a chaos test: its report is redacted, then its result
        redact_report(report)
        if report.when == "teardown":  # every fault is reverted, the timeline complete
            record_result(item, report)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Iterator[None]:
    """Suite properties before junitxml writes its file; the report after pytest's own
    sessionfinish, which tears down what an interrupted (Ctrl-C, SIGTERM) item left set up:
    its faults are reverted and its timeline is complete only then."""
    run = session.config.stash.get(RUN_KEY, None)
    if run is not None and run.results and run.settings.remediation_baseline:
        _junit_suite_properties(session.config, run)
    yield
    if run is None:
        return
    settle_interrupted(run)
    if run.results and run.settings.report is not None:
        from .results import write_report

        write_report(run)


def _junit_suite_properties(config: pytest.Config, run: ChaosRun) -> None:
    """The run's with/without table as JUnit test-suite properties (``--junitxml``)."""
    from _pytest.junitxml import xml_key  # what record_testsuite_property itself reads

    xml = config.stash.get(xml_key, None)
    if xml is None:
        return
    from .report.junit import run_comparison_properties
    from .results import run_comparison

    for name, value in run_comparison_properties(run_comparison(run)["rows"]):
        xml.add_global_property(name, value)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not (run.results or run.notices):
        return
    from .results import resilience_section_lines

    terminalreporter.section("resilience")
    for line in resilience_section_lines(run):
        terminalreporter.write_line(line)
