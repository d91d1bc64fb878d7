"""The plugin's fixtures: the target, the timeline, SLOs, load, the faults and the engine.

Registered by plugin.py (``pytest_plugins``), which holds the options and hooks. Each body
only wires: it builds the room's object from the run's settings, yields it, and at teardown
undoes what it started, so a test that fails or is interrupted leaves nothing behind.
Every room, not only the heavy clients (kubernetes, locust, prometheus-api-client), is
imported inside the fixtures that use it: pytest loads this module in every session, and a
suite without chaos must not pay for the faults, the SLOs or the timeline. The fault
fixtures return the typed injectors of faults/injectors.py.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from .errors import ResilienceError
from .item_results import baseline_of, twin_of
from .stash_keys import RUN_KEY, SLO_KEY, SNAPSHOTS_KEY, TIMELINE_KEY

if TYPE_CHECKING:
    from .baseline import ObservingEngine
    from .engine.alerts import Rule
    from .engine.pager import LocalPager
    from .engine.runner import Engine
    from .faults.base import FaultSession
    from .faults.injectors import (
        BadDeployInjector,
        DiskFillInjector,
        LatencyInjector,
        MemoryStressInjector,
        NetworkBlockInjector,
        NodeFailureInjector,
        PodKillInjector,
        ProxyDownInjector,
        ToxicInjector,
    )
    from .load_starter import LoadStarter
    from .monitoring import Monitoring
    from .slo import SLOMonitor
    from .targets.base import Target
    from .timeline import Event, Timeline

T = TypeVar("T")


@pytest.fixture(scope="session")
def chaos_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The system under test: the embedded local target, or a Kubernetes cluster."""
    from .faults.base import revert_every_session

    run = request.config.stash[RUN_KEY]
    work_dir = run.make_work_dir()  # owned (pid), so a later session can sweep it if we die
    try:
        target = _or_fail(lambda: run.open_target(work_dir), failed="chaos target did not start")
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
def chaos_monitoring(request: pytest.FixtureRequest, chaos_target: Target) -> Monitoring:
    """Real Prometheus + Alertmanager (managed, or ``--prometheus-url``) or the built-in
    probes; ``.probe_path`` says which. Requesting it routes the engine's alerts through
    Alertmanager (see ``remediation_alerts``)."""
    run = request.config.stash[RUN_KEY]
    return _or_fail(lambda: run.monitoring(chaos_target), failed="monitoring did not start")


@pytest.fixture
def timeline(request: pytest.FixtureRequest, chaos_target: Target) -> Iterator[Timeline]:
    """Events and series of this scenario; the platform's pod events land here too."""
    from .timeline import Timeline

    line = Timeline(request.node.nodeid)
    request.node.stash[TIMELINE_KEY] = line
    request.config.stash[RUN_KEY].running[request.node.nodeid] = request.node
    unsubscribe = chaos_target.subscribe(line.mark_target_event)
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

    def show(event: Event) -> None:
        phase = PHASE_OF_EVENT.get(event.kind)
        if phase is None:
            return
        t0 = line.t0
        text = phase_line(phase, event.name or line.scenario, None if t0 is None else event.at - t0)
        # As pytest's live logging does: step around output capture, from any thread.
        with lock, capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(text)

    return line.on_mark(show)


@pytest.fixture
def slo(
    request: pytest.FixtureRequest, timeline: Timeline, chaos_target: Target
) -> Iterator[SLOMonitor]:
    """Declare objectives (error rate, latency, availability, ``promql``); assert them."""
    from .slo import SLOMonitor

    run = request.config.stash[RUN_KEY]
    monitor_class = SLOMonitor
    if run.settings.remediation_baseline:
        from .baseline import WindowedSLOMonitor  # marks recovery windows

        monitor_class = WindowedSLOMonitor
    monitor = monitor_class(
        timeline,
        prometheus=lambda name, expr, **kw: run.monitoring(chaos_target).probe(name, expr, **kw),
    )
    request.node.stash[SLO_KEY] = monitor
    yield monitor
    monitor.close()


@pytest.fixture
def load(
    request: pytest.FixtureRequest, chaos_target: Target, timeline: Timeline
) -> Iterator[LoadStarter]:
    """``load(users=20)`` starts Locust out of process; stopped at teardown.

    ``workers=`` defaults to ``--load-workers``, run on the target where it has the
    ``load_workers`` capability; ``rps=`` paces the users (see start_load).
    """
    from .load_starter import LoadStarter

    settings = request.config.stash[RUN_KEY].settings
    starter = LoadStarter(
        target=chaos_target,
        entry=settings.entry,
        timeline=timeline,
        default_workers=settings.load_workers,
    )
    yield starter
    starter.stop_all()


@pytest.fixture
def _chaos_faults(
    request: pytest.FixtureRequest, chaos_target: Target, timeline: Timeline
) -> Iterator[FaultSession]:
    from .faults.base import FaultSession

    run = request.config.stash[RUN_KEY]
    session = FaultSession(
        chaos_target, ledger=run.ledger, timeline=timeline, dry_run=run.settings.dry_run
    )
    yield session
    session.revert_all()


@pytest.fixture
def pod_kill(_chaos_faults: FaultSession) -> PodKillInjector:
    """``pod_kill("app=api", count=1)``; ``.revert()`` waits for the replacement."""
    from .faults.injectors import PodKillInjector

    return PodKillInjector(_chaos_faults)


@pytest.fixture
def network_block(_chaos_faults: FaultSession) -> NetworkBlockInjector:
    """``network_block("app=postgres", direction="ingress", action="drop")`` or ``(port=5432)``."""
    from .faults.injectors import NetworkBlockInjector

    return NetworkBlockInjector(_chaos_faults)


@pytest.fixture
def disk_fill(_chaos_faults: FaultSession) -> DiskFillInjector:
    """``disk_fill("postgres", percent=90)``: a real file on the service's bounded volume."""
    from .faults.injectors import DiskFillInjector

    return DiskFillInjector(_chaos_faults)


@pytest.fixture
def memory_stress(_chaos_faults: FaultSession) -> MemoryStressInjector:
    """``memory_stress("api", share=0.8)``: a helper in each pod grows it to 80% of its limit."""
    from .faults.injectors import MemoryStressInjector

    return MemoryStressInjector(_chaos_faults)


@pytest.fixture
def latency(_chaos_faults: FaultSession) -> LatencyInjector:
    """``latency("postgres", ms=500, jitter_ms=50)`` on the dependency's Toxiproxy proxy."""
    from .faults.injectors import LatencyInjector

    return LatencyInjector(_chaos_faults)


@pytest.fixture
def toxic(_chaos_faults: FaultSession) -> ToxicInjector:
    """``toxic("redis", "bandwidth", rate=64)``: any Toxiproxy toxic, checked by name."""
    from .faults.injectors import ToxicInjector

    return ToxicInjector(_chaos_faults)


@pytest.fixture
def proxy_down(_chaos_faults: FaultSession) -> ProxyDownInjector:
    """``proxy_down("postgres")``: the dependency's proxy refuses and drops connections."""
    from .faults.injectors import ProxyDownInjector

    return ProxyDownInjector(_chaos_faults)


@pytest.fixture
def node_failure(_chaos_faults: FaultSession) -> NodeFailureInjector:
    """``node_failure(node)``: every pod on the node hangs (local) or is drained (k8s);
    ``hang=True`` insists on the hang (capability ``node_outage``)."""
    from .faults.injectors import NodeFailureInjector

    return NodeFailureInjector(_chaos_faults)


@pytest.fixture
def bad_deploy(_chaos_faults: FaultSession) -> BadDeployInjector:
    """``bad_deploy("api", version="v2")``: roll out a faulty release; revert rolls it back."""
    from .faults.injectors import BadDeployInjector

    return BadDeployInjector(_chaos_faults)


# -- the remediation engine -----------------------------------------------------------------


@pytest.fixture
def remediation_rules(request: pytest.FixtureRequest) -> list[Rule]:
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
def local_pager() -> Iterator[LocalPager]:
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
    remediation_rules: list[Rule],
    local_pager: LocalPager,
    tmp_path: Path,
    remediation_alerts: str,
) -> Iterator[Engine | ObservingEngine]:
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
    alert_options = _or_fail(lambda: engine_alert_options(remediation_alerts, monitoring))
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
    baseline = baseline_of(request.node)
    if baseline is not None:
        from .baseline import snapshot

        snapshots[baseline] = snapshot(target)
        return False
    if twin_of(request.node) is None:
        return False
    from .baseline import make_fresh

    run = request.config.stash[RUN_KEY]
    before = snapshots.get(request.node.nodeid)
    restored = _or_fail(lambda: make_fresh(target, run.ledger, before))
    if restored:
        timeline.mark("baseline_restored", "; ".join(restored), changes=restored)
    return True


def _or_fail(make: Callable[[], T], *, failed: str = "") -> T:
    """``make()``; a ResilienceError fails the test with its reason (after ``failed: ``, what
    did not happen), not a traceback: a target or the monitoring that cannot start, a
    configuration the engine refuses."""
    try:
        return make()
    except ResilienceError as exc:
        reason = str(exc)
    # Outside the except block: failing inside it would print the reason twice, chained.
    pytest.fail(f"{failed}: {reason}" if failed else reason, pytrace=False)
