"""pytest glue only: options, markers, fixtures and hooks. Logic lives in the rooms.

Heavy clients (kubernetes, locust, prometheus-api-client) are imported inside the
fixtures that need them, so installing this plugin costs other test suites nothing.

Size: over 500 lines because pytest finds fixtures and hooks by module; the fault fixtures'
bodies are one-line calls into faults/, and they move out with issue 14's typed injectors.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .errors import ResilienceError
from .faults.base import FaultSession, revert_every_session
from .run import ChaosRun
from .settings import ChaosSettings, add_options
from .slo import SLOMonitor
from .targets.base import Target, TargetEvent
from .timeline import Timeline

RUN_KEY = pytest.StashKey[ChaosRun]()
TIMELINE_KEY = pytest.StashKey[Timeline]()
SLO_KEY = pytest.StashKey[SLOMonitor]()
OUTCOME_KEY = pytest.StashKey[str]()
DURATION_KEY = pytest.StashKey[float]()
_PREVIOUS_SIGTERM = pytest.StashKey[Any]()
PREFLIGHT_KEY = pytest.StashKey[str]()
VERDICTS_KEY = pytest.StashKey[list[Any]]()
EXPECTED_KEY = pytest.StashKey[str]()  # a baseline's expected failure (see baseline.py)
SNAPSHOTS_KEY = pytest.StashKey[dict[str, Any]]()  # baseline nodeid -> its twin's start state


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
        config.stash[_PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    revert_every_session()
    if _PREVIOUS_SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_PREVIOUS_SIGTERM])
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
def pytest_runtest_call(item: pytest.Item):
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
        if _twin_of(item) is None:
            raise
        from .baseline import expected_without_automation

        expected = expected_without_automation(exc, item.stash.get(TIMELINE_KEY, None))
        if expected is None:
            raise
        item.stash[EXPECTED_KEY] = expected
        return None
    pytest.skip(f"this machine cannot inject the scenario's fault: {reason}")


def _twin_of(item: pytest.Item) -> str | None:
    """A baseline item's automated twin (its nodeid); None for every other item."""
    if not item.config.stash[RUN_KEY].settings.remediation_baseline:
        return None
    from .baseline import TWIN_OF

    return item.stash.get(TWIN_OF, None)


def _baseline_of(item: pytest.Item) -> str | None:
    """An automated item's baseline twin (its nodeid), when --remediation-baseline made one."""
    if not item.config.stash[RUN_KEY].settings.remediation_baseline:
        return None
    from .baseline import BASELINE_OF

    return item.stash.get(BASELINE_OF, None)


def pytest_report_header(config: pytest.Config) -> str | None:
    """Which cluster a kubernetes run will break: context, API server URL, namespace."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.settings.target != "kubernetes":
        return None
    from .targets.kube_api import describe_target

    return describe_target(context=run.settings.kube_context, namespace=run.settings.namespace)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """``--chaos-doctor``: print the checks and verdicts, run nothing."""
    run = session.config.stash[RUN_KEY]
    if not run.settings.doctor:
        return None
    from .preflight import doctor_lines

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in doctor_lines(run.settings, session.config.stash.get(VERDICTS_KEY, [])):
        reporter.write_line(line)
    return True


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chaos_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The system under test: the embedded local target, or a Kubernetes cluster."""
    run = request.config.stash[RUN_KEY]
    work_dir = run.make_work_dir()  # owned (pid), so a later session can sweep it if we die
    try:
        target = _or_fail(lambda: run.open_target(work_dir))
        try:
            run.settle_leftovers(target)
            yield target
        finally:
            revert_every_session()
            run.close_monitoring()
            target.close()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def chaos_monitoring(request: pytest.FixtureRequest, chaos_target: Target) -> Any:
    """Real Prometheus + Alertmanager (managed, or ``--prometheus-url``) or the built-in
    probes; ``.probe_path`` says which. Requesting it routes the engine's alerts through
    Alertmanager (see ``remediation_alerts``)."""
    run = request.config.stash[RUN_KEY]
    try:
        return run.monitoring(chaos_target)
    except ResilienceError as exc:
        reason = str(exc)
    pytest.fail(f"monitoring did not start: {reason}", pytrace=False)


@pytest.fixture
def timeline(request: pytest.FixtureRequest, chaos_target: Target) -> Iterator[Timeline]:
    """Events and series of this scenario; the platform's pod events land here too."""
    line = Timeline(request.node.nodeid)
    request.node.stash[TIMELINE_KEY] = line
    request.config.stash[RUN_KEY].running[request.node.nodeid] = request.node
    unsubscribe = chaos_target.subscribe(lambda e: _mark_target_event(line, e))
    stop_phases = _print_phases(request.config, line)
    yield line
    stop_phases()
    unsubscribe()


def _print_phases(config: pytest.Config, line: Timeline) -> Callable[[], None]:
    """Live phase lines for long scenarios (``-q`` turns them off)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 0:
        return lambda: None
    from .report.console import PHASE_OF_EVENT, phase_line

    capture = config.pluginmanager.get_plugin("capturemanager")
    lock = threading.Lock()

    def show(event: Any) -> None:
        phase = PHASE_OF_EVENT.get(event.kind)
        if phase is None:
            return
        t0 = line.t0
        text = phase_line(phase, event.name or line.scenario, None if t0 is None else event.at - t0)
        # As pytest's live logging does: step around output capture, from any thread.
        with lock, capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(text)

    return line.on_mark(show)


def _mark_target_event(line: Timeline, event: TargetEvent) -> None:
    line.mark(
        str(event.kind),
        event.pod or event.node or event.workload or "",
        at=event.at,
        workload=event.workload,
        node=event.node,
        restarts=event.restarts,
        detail=event.detail,
    )


@pytest.fixture
def slo(
    request: pytest.FixtureRequest, timeline: Timeline, chaos_target: Target
) -> Iterator[SLOMonitor]:
    """Declare objectives (error rate, latency, availability, ``promql``); assert them."""
    run = request.config.stash[RUN_KEY]
    if run.settings.remediation_baseline:
        from .baseline import WindowedSLOMonitor as monitor_class  # marks recovery windows
    else:
        monitor_class = SLOMonitor
    monitor = monitor_class(
        timeline,
        prometheus=lambda name, expr, **kw: run.monitoring(chaos_target).probe(name, expr, **kw),
    )
    request.node.stash[SLO_KEY] = monitor
    yield monitor
    monitor.close()


@pytest.fixture
def load(request: pytest.FixtureRequest, chaos_target: Target, timeline: Timeline):
    """``load(users=20)`` starts Locust out of process; stopped at teardown.

    ``workers=`` defaults to ``--load-workers``; ``rps=`` paces the users (see start_load).
    """
    from .load import start_load

    run = request.config.stash[RUN_KEY]
    started = []

    def start(*, host: str | None = None, **options: Any):
        options.setdefault("workers", run.settings.load_workers)
        load_run = start_load(
            host=host or chaos_target.endpoint(run.settings.entry), timeline=timeline, **options
        )
        started.append(load_run)
        return load_run

    yield start
    for load_run in started:
        load_run.stop()


@pytest.fixture
def _chaos_faults(
    request: pytest.FixtureRequest, chaos_target: Target, timeline: Timeline
) -> Iterator[FaultSession]:
    run = request.config.stash[RUN_KEY]
    session = FaultSession(
        chaos_target, ledger=run.ledger, timeline=timeline, dry_run=run.settings.dry_run
    )
    yield session
    session.revert_all()


@pytest.fixture
def pod_kill(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``pod_kill("app=api", count=1)``; ``.revert()`` waits for the replacement."""
    from .faults.pod_kill import PodKill

    return lambda selector, **options: _chaos_faults.inject(PodKill(selector, **options))


@pytest.fixture
def network_block(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``network_block("app=postgres", direction="ingress", action="drop")`` or ``(port=5432)``."""
    from .faults.network import NetworkBlock

    return lambda selector=None, **options: _chaos_faults.inject(NetworkBlock(selector, **options))


@pytest.fixture
def disk_fill(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``disk_fill("postgres", percent=90)``: a real file on the service's bounded volume."""
    from .faults.disk import DiskFill

    return lambda service, **options: _chaos_faults.inject(DiskFill(service, **options))


@pytest.fixture
def memory_stress(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``memory_stress("api", share=0.8)``: a helper in each pod grows it to 80% of its limit."""
    from .faults.memory import MemoryStress

    return lambda selector, **options: _chaos_faults.inject(MemoryStress(selector, **options))


@pytest.fixture
def latency(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``latency("postgres", ms=500, jitter_ms=50)`` on the dependency's Toxiproxy proxy."""
    from .faults.toxics import Latency

    return lambda proxy, **options: _chaos_faults.inject(Latency(proxy, **options))


@pytest.fixture
def toxic(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``toxic("redis", "bandwidth", rate=64)``: any Toxiproxy toxic, checked by name."""
    from .faults.toxics import Toxic

    return lambda proxy, type, **options: _chaos_faults.inject(Toxic(proxy, type, **options))


@pytest.fixture
def proxy_down(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``proxy_down("postgres")``: the dependency's proxy refuses and drops connections."""
    from .faults.toxics import ProxyDown

    return lambda proxy: _chaos_faults.inject(ProxyDown(proxy))


@pytest.fixture
def node_failure(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``node_failure(node)``: every pod on the node hangs (local) or is drained (k8s);
    ``hang=True`` insists on the hang (capability ``node_outage``)."""
    from .faults.node import NodeFailure

    return lambda node, *, hang=False: _chaos_faults.inject(NodeFailure(node, hang=hang))


@pytest.fixture
def bad_deploy(_chaos_faults: FaultSession) -> Callable[..., Any]:
    """``bad_deploy("api", version="v2")``: roll out a faulty release; revert rolls it back."""
    from .faults.deploy import BadDeploy

    return lambda workload, version="v2": _chaos_faults.inject(BadDeploy(workload, version))


# -- the remediation engine -----------------------------------------------------------------


@pytest.fixture
def remediation_rules(request: pytest.FixtureRequest) -> list[Any]:
    """The engine's probe rules; override this fixture to change thresholds or ``for``."""
    from .probes import scenario_rules

    return scenario_rules(request.config.stash[RUN_KEY].settings.entry)


@pytest.fixture
def remediation_alerts() -> str:
    """Where the engine's alerts come from: "auto", "alertmanager" or "built-in".

    "auto": through Alertmanager when the test requests ``chaos_monitoring`` and it runs
    the managed servers, else the engine's own rules. Override or parametrize it.
    """
    return "auto"


@pytest.fixture
def local_pager() -> Iterator[Any]:
    """A page receiver on a loopback port: the engine's escalations land here in tests."""
    from .engine.pager import LocalPager

    with LocalPager() as pager:
        yield pager


@pytest.fixture
def remediation_engine(
    request: pytest.FixtureRequest,
    chaos_target: Target,
    timeline: Timeline,
    _chaos_faults: FaultSession,
    remediation_rules: list[Any],
    local_pager: Any,
    tmp_path: Path,
    remediation_alerts: str,
) -> Iterator[Any]:
    """The auto-remediation engine watching this scenario; stopped before faults revert.

    In a ``--remediation-baseline`` run it observes only (dry run, no pager) on a target put
    back to the state its automated twin started from (baseline.py)."""
    from .engine import make_engine
    from .monitoring import engine_alert_options, mark_loop
    from .probes import BuiltinProbes

    run = request.config.stash[RUN_KEY]
    observing = _prepare_baseline(request, chaos_target, timeline)
    monitoring = (
        run.monitoring(chaos_target)
        if remediation_alerts == "alertmanager" or "chaos_monitoring" in request.fixturenames
        else None
    )
    alert_options = _or_fail_config(lambda: engine_alert_options(remediation_alerts, monitoring))
    probes = BuiltinProbes(chaos_target, timeline, run.settings.entry)
    engine = make_engine(
        chaos_target,
        store_path=tmp_path / "engine.db",
        playbooks_dir=run.settings.playbooks,
        rootdir=request.config.rootpath,
        timeline=timeline,
        dry_run=run.settings.dry_run or observing,
        probes=probes.as_mapping(),
        rules=remediation_rules,
        # a dry-run engine still queues a page on escalation if it has a channel: none here
        escalation=[] if observing else [local_pager.channel()],
        eval_interval_s=0.5,
        **alert_options,
    )
    engine.start()
    try:
        if observing:
            from .baseline import ObservingEngine

            yield ObservingEngine(engine)
        else:
            yield engine
    finally:
        engine.close()
        probes.close()
        if alert_options.get("listen") and monitoring is not None:
            mark_loop(monitoring, timeline)  # where detection time went, on the timeline


def _prepare_baseline(request: pytest.FixtureRequest, target: Target, timeline: Timeline) -> bool:
    """True for a baseline run, after the target is back where its twin started; for the
    twin itself, note that state (each workload's replicas and version)."""
    snapshots = request.config.stash.setdefault(SNAPSHOTS_KEY, {})
    baseline = _baseline_of(request.node)
    if baseline is not None:
        from .baseline import snapshot

        snapshots[baseline] = snapshot(target)
        return False
    if _twin_of(request.node) is None:
        return False
    from .baseline import make_fresh

    run = request.config.stash[RUN_KEY]
    before = snapshots.get(request.node.nodeid)
    restored = _or_fail_config(lambda: make_fresh(target, run.ledger, before))
    if restored:
        timeline.mark("baseline_restored", "; ".join(restored), changes=restored)
    return True


# -- reporting ------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if (
        report.failed
        and call.excinfo is not None
        and isinstance(call.excinfo.value, ResilienceError)
        and item.config.getoption("tbstyle", "auto") == "auto"
        and not item.config.getoption("fulltrace", False)
    ):
        report.longrepr = _short_failure(item, call.excinfo)
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        item.stash[OUTCOME_KEY] = "error" if report.when == "setup" else report.outcome
        item.stash[DURATION_KEY] = report.duration
    if TIMELINE_KEY in item.stash:
        _redact_report(report)
    if report.when == "teardown" and TIMELINE_KEY in item.stash:
        # At teardown every fault is reverted and the timeline is complete.
        from .results import attach, scenario_result

        run = item.config.stash[RUN_KEY]
        outcome = item.stash.get(OUTCOME_KEY, "error")
        if report.outcome == "failed" and outcome == "passed":
            outcome = "error"
        twin_of = _twin_of(item)
        result = scenario_result(
            nodeid=item.nodeid,
            timeline=item.stash[TIMELINE_KEY],
            slo=item.stash.get(SLO_KEY, None),
            outcome=outcome,
            duration_s=item.stash.get(DURATION_KEY, 0.0),
            run=run,
            mode="automated" if twin_of is None else "baseline",
            twin=twin_of or _baseline_of(item) or "",
            expected_failure=item.stash.get(EXPECTED_KEY, ""),
        )
        run.running.pop(item.nodeid, None)
        run.results.append(result)
        attach(report, result, run)
    return report


def _redact_report(report: pytest.TestReport) -> None:
    """A chaos test's failure text, captured output and properties pass the secret filter
    before pytest-html or JUnit write them: a DSN in an assertion is still a secret."""
    from .redaction import redact, redact_text

    if report.longrepr is not None:
        text = str(report.longrepr)
        cleaned = redact_text(text)
        if cleaned != text:
            report.longrepr = cleaned
    report.sections = [(title, redact_text(body)) for title, body in report.sections]
    report.user_properties = [(name, redact(value)) for name, value in report.user_properties]


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
    _settle_interrupted(run)
    if run.results and run.settings.report is not None:
        from .results import write_report

        write_report(run)


def _settle_interrupted(run: ChaosRun) -> None:
    """A scenario cut short by Ctrl-C or SIGTERM gets no call or teardown report, so no
    result: it enters the report as an error, with what its timeline recorded."""
    from .results import scenario_result

    for nodeid, item in list(run.running.items()):
        run.running.pop(nodeid)
        run.results.append(
            scenario_result(
                nodeid=nodeid,
                timeline=item.stash[TIMELINE_KEY],
                slo=item.stash.get(SLO_KEY, None),
                outcome="error",
                duration_s=item.stash.get(DURATION_KEY, 0.0),
                run=run,
            )
        )
        run.notices.append(f"{nodeid} was interrupted; its faults were reverted at teardown")


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


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not (run.results or run.notices):
        return
    from .results import resilience_section_lines

    terminalreporter.section("resilience")
    for line in resilience_section_lines(run):
        terminalreporter.write_line(line)


def _or_fail(make: Callable[[], Target]) -> Target:
    # A target that cannot start fails its tests with the reason, not a traceback.
    try:
        return make()
    except ResilienceError as exc:
        reason = str(exc)
    # Outside the except block: failing inside it would print the reason twice, chained.
    pytest.fail(f"chaos target did not start: {reason}", pytrace=False)


def _or_fail_config(make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ResilienceError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)


def _short_failure(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """``test.py:12: SelectorMatchedNothing: ...``: the line of the test, then the reason.

    A ResilienceError already names the file, field or value at fault; the plugin's own
    frames under it would only bury that line.
    """
    where = ""
    for entry in reversed(excinfo.traceback):
        if Path(entry.path) == item.path:
            where = f"{entry.path}:{entry.lineno + 1}: "
            break
    return f"{where}{type(excinfo.value).__name__}: {excinfo.value}"
