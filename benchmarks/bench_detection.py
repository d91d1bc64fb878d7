"""Time to detect: fault -> alert at the engine, real Prometheus path against the built-in one.

    python benchmarks/bench_detection.py [--runs 10]              # the demo, both paths
    python benchmarks/bench_detection.py --synthetic [--runs 10]  # one settable metric

Demo (default): the bundled demo on the local target, the session monitoring of the plugin
(managed Prometheus scraping every pod at 1 s, the packaged rules, managed Alertmanager
with group_wait 1 s) and two dry-run engines watching the same pods: one receives
Alertmanager's webhook (own rules off), the other runs the built-in rule over the pods'
/metrics (the plugin's probes, evaluated every 0.5 s). Each run leaks every API pod's
database pool (T0, the same fault for both paths at the same instant) and times the first
DatabaseConnectionPoolExhaustion alert at each engine; then the pool is given back and both
alerts must resolve before the next run. Both rules wait ``for: 2s``, so the difference is
the pipeline, not the threshold. The Prometheus path is split from the servers' own records
(``monitoring.loop_split``):

    scrape        T0 -> first stored sample that breaks the rule's expression
    evaluate      sample -> the rule's first matching evaluation (pending)
    for           pending -> firing (``for: 2s``)
    alertmanager  firing -> webhook received by the engine (group_wait 1 s, delivery)
    engine        webhook -> the engine's first (dry-run) action

and the built-in path as probe breach seen (the rule's pending-since) -> firing -> action.

Synthetic (``--synthetic``): a settable /metrics endpoint instead of the demo, the
threshold crossed at a known instant; the split comes from the servers' clocks:

    scrape      T0 -> first stored sample with the new value (Prometheus scrape timestamp)
    evaluate    sample -> alert pending (activeAt: the first rule evaluation that matched)
    for         pending -> firing (first ALERTS{alertstate="firing"} sample; rule `for: 2s`)
    notify      firing -> Alertmanager received it (its updatedAt)
    dispatch    received -> webhook arrived (group_wait 1s)

The worst case by configuration is scrape interval + evaluation interval + ``for`` +
group_wait (or group_interval once the group exists).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from aiohttp import web

from pytest_resilience.prometheus import (
    ManagedAlertmanager,
    ManagedPrometheus,
    PromQLProbe,
)
from pytest_resilience.prometheus.server import parse_api_time

ALERT = "DatabaseConnectionPoolExhaustion"
POD = {"service": "api", "pod": "api-0", "node": "n1"}
FOR_S = 2.0
GROUP_WAIT_S = 1.0


class Receiver:
    """Webhook receiver recording (arrival time, payload)."""

    def __init__(self) -> None:
        self.hooks: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            payload = await request.json()
            with self.cond:
                self.hooks.append((time.time(), payload))
                self.cond.notify_all()
            return web.Response(text="ok")

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            app = web.Application()
            app.router.add_post("/alerts", handle)
            runner = web.AppRunner(app)
            self.loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/alerts"
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(runner.cleanup())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)

    def wait(self, status: str, after: float, timeout: float = 30.0) -> tuple[float, dict]:
        def find():
            return next(
                (
                    (t, p)
                    for t, p in self.hooks
                    if t > after
                    and p["status"] == status
                    and p["commonLabels"].get("alertname") == ALERT
                ),
                None,
            )

        with self.cond:
            found = self.cond.wait_for(find, timeout)
        if not found:
            raise TimeoutError(f"no {status} webhook for {ALERT} within {timeout} s")
        return found

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Exporter:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_resilience.prometheus.settable_exporter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = f"127.0.0.1:{int(self.proc.stdout.readline().split()[1])}"

    def set(self, name: str, value: float) -> float:
        """Set a gauge; return the instant the endpoint serves the new value."""
        labels = " ".join(f"{k}={v}" for k, v in POD.items())
        self.proc.stdin.write(f"gauge {name} {value} {labels}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"
        return time.time()

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


@dataclass
class Run:
    total: float
    scrape: float
    evaluate: float
    pending_for: float
    notify: float
    dispatch: float
    resolve: float


def _samples(prom: ManagedPrometheus, selector: str) -> list[tuple[float, float]]:
    data = prom.api("query", query=f"{selector}[2m]")
    return [(float(t), float(v)) for r in data["result"] for t, v in r["values"]]


def _am_updated_at(am: ManagedAlertmanager) -> float:
    for alert in am.alerts():
        if alert["labels"].get("alertname") == ALERT:
            return parse_api_time(alert["updatedAt"])
    raise RuntimeError(f"{ALERT} not in Alertmanager")


def _deadline_poll(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def one_run(prom, am, exporter, receiver, probe, *, phase_s: float) -> Run:
    _deadline_poll(lambda: probe() == 0.2, 15, "pool back at 0.2")
    prom.wait_for_no_alert(ALERT, 15)
    # Not synchronisation: each run would otherwise start in lock-step with the scrape,
    # evaluation and group ticks (right after the last resolved webhook) and measure one
    # phase only. Offsets spread evenly over one interval sample every phase.
    time.sleep(phase_s)

    t0 = exporter.set("demo_db_pool_in_use", 10)
    t_hook, _payload = receiver.wait("firing", after=t0)
    t_am = _am_updated_at(am)
    # The webhook's startsAt is Prometheus's FiredAt; activeAt (pending) is only on its API.
    (alert,) = [a for a in prom.alerts() if a.name == ALERT]
    t_pending = alert.active_at
    t_scrape = min(
        t for t, v in _samples(prom, 'demo_db_pool_in_use{pod="api-0"}') if v == 10 and t >= t0
    )
    t_firing = min(
        t
        for t, _ in _samples(prom, f'ALERTS{{alertname="{ALERT}",alertstate="firing"}}')
        if t >= t0
    )

    t_low = exporter.set("demo_db_pool_in_use", 2)
    t_resolved, _ = receiver.wait("resolved", after=t_low)
    return Run(
        total=t_hook - t0,
        scrape=t_scrape - t0,
        evaluate=t_pending - t_scrape,
        pending_for=t_firing - t_pending,
        notify=t_am - t_firing,
        dispatch=t_hook - t_am,
        resolve=t_resolved - t_low,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--synthetic", action="store_true", help="a settable metric, no demo")
    args = parser.parse_args()
    if not (ManagedPrometheus.available() and ManagedAlertmanager.available()):
        print("prometheus and prometheus-alertmanager must be on PATH", file=sys.stderr)
        return 2
    return synthetic(args.runs) if args.synthetic else demo(args.runs)


def synthetic(runs_wanted: int) -> int:
    if not (ManagedPrometheus.available() and ManagedAlertmanager.available()):
        print("prometheus and prometheus-alertmanager must be on PATH", file=sys.stderr)
        return 2

    receiver, exporter = Receiver(), Exporter()
    exporter.set("demo_db_pool_max", 10)
    exporter.set("demo_db_pool_in_use", 2)
    runs: list[Run] = []
    try:
        with (
            ManagedAlertmanager(receiver.url, group_wait_s=GROUP_WAIT_S) as am,
            ManagedPrometheus(alertmanager=am.url, targets=[(exporter.address, POD)]) as prom,
        ):
            prom.wait_for_targets_up(timeout=20)
            probe = PromQLProbe(
                "pool_use", 'max(demo_db_pool_in_use{pod="api-0"}) / 10', url=prom.url
            )
            for i in range(runs_wanted):
                run = one_run(prom, am, exporter, receiver, probe, phase_s=i / runs_wanted)
                runs.append(run)
                print(f"run {i + 1:2d}: {run.total:5.2f} s", file=sys.stderr)
    finally:
        exporter.stop()
        receiver.stop()

    def row(label: str, values: list[float]) -> str:
        return (
            f"{label:<36} median {statistics.median(values):5.2f} s   "
            f"min {min(values):5.2f}   max {max(values):5.2f}"
        )

    totals = [r.total for r in runs]
    ceiling = 1.0 + 1.0 + FOR_S + GROUP_WAIT_S  # scrape + eval interval + for + group wait
    print(f"detection latency, {len(runs)} runs (scrape 1s, eval 1s, for 2s, group_wait 1s)")
    print(row("threshold -> webhook (total)", totals))
    print(row("  scrape (T0 -> sample stored)", [r.scrape for r in runs]))
    print(row("  evaluate (sample -> pending)", [r.evaluate for r in runs]))
    print(row("  for (pending -> firing)", [r.pending_for for r in runs]))
    print(row("  notify (firing -> Alertmanager)", [r.notify for r in runs]))
    print(row("  dispatch (Alertmanager -> webhook)", [r.dispatch for r in runs]))
    print(row("recovered -> resolved webhook", [r.resolve for r in runs]))
    print(
        f"first run (new Alertmanager group, waits group_wait): {runs[0].total:.2f} s; later runs "
        "join the existing group and wait for its next group_interval tick instead"
    )
    print(
        f"baseline: the configured `for` {FOR_S:.2f} s -> median total / for = "
        f"{statistics.median(totals) / FOR_S:.2f}x; worst case by configuration {ceiling:.2f} s "
        f"-> max / worst case = {max(totals) / ceiling:.2f}x"
    )
    print(json.dumps({"runs": [r.__dict__ for r in runs]}), file=sys.stderr)
    return 0


# -- the demo: Prometheus path against the built-in path, same fault, same run -------------

DEMO_ALERT = "DatabaseConnectionPoolExhaustion"


@dataclass
class DemoRun:
    prometheus: float  # T0 -> alert at the engine, through Prometheus + Alertmanager
    builtin: float  # T0 -> alert at the engine, the built-in rule
    split: dict  # LoopSplit of the Prometheus path
    builtin_breach: float  # T0 -> the built-in rule first saw the breach (pending since)
    builtin_for: float  # pending -> firing (built-in rule's `for`)
    builtin_engine: float | None  # alert -> first action (dry run)
    resolve_first: float  # fault reverted -> first path resolved at its engine
    resolve_last: float  # ... and the second (usually the Prometheus path)


def _leak(target, pods, path: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from remediation_faults import admin

    with ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(lambda pod: admin(target, pod, path), pods))


def _fired(line, source: str, since: float):
    from pytest_resilience.timeline import ALERT_FIRED

    return next(
        (e for e in line.events(ALERT_FIRED, since=since)
         if e.name == DEMO_ALERT and e.detail.get("source") == source),
        None,
    )  # fmt: skip


def _demo_run(i: int, runs_wanted: int, target, monitoring, probes, engines) -> DemoRun:
    """One fault, both paths: leak every pod's pool, time each engine's alert, give it back."""
    from remediation_faults import api_pods

    from pytest_resilience.monitoring import loop_split
    from pytest_resilience.timeline import (
        ACTION_STARTED,
        ALERT_RESOLVED,
        FAULT_INJECTED,
        FAULT_REVERTED,
        Timeline,
    )

    line = Timeline(f"run {i + 1}")
    for engine in engines:
        engine.timeline = line
    pods = api_pods(target)
    _deadline_poll(
        lambda: (
            not any(a.name == DEMO_ALERT for a in monitoring.prometheus.alerts())
            and (probes.pool_use() or 0) < 0.5
        ),
        30,
        "both paths quiet before the fault",
    )
    # Not synchronisation: spreads T0 over one scrape/evaluation interval (see synthetic).
    time.sleep(i / runs_wanted)
    t0 = line.mark(FAULT_INJECTED, "connection_leak").at  # T0 before acting, as the ledger
    _leak(target, pods, "/admin/pool/leak?n=1000")
    both = line.wait_for(
        lambda: (
            _fired(line, "alertmanager", t0) is not None and _fired(line, "rule", t0) is not None
        ),
        timeout=30,
    )
    if not both:
        raise TimeoutError(f"run {i + 1}: an alert did not reach its engine")
    am_alert, rule_alert = _fired(line, "alertmanager", t0), _fired(line, "rule", t0)
    for engine in engines:
        engine.wait_idle(10)
    split = loop_split(monitoring.prometheus_url, line, mark=False)
    assert split is not None
    incident = rule_alert.detail.get("incident")
    actions = [
        e for e in line.events(ACTION_STARTED, since=rule_alert.at)
        if e.detail.get("incident") == incident
    ]  # fmt: skip
    t_back = line.mark(FAULT_REVERTED, "connection_leak").at
    _leak(target, pods, "/admin/pool/unleak")

    def resolved() -> list:
        return [e for e in line.events(ALERT_RESOLVED, since=t_back) if e.name == DEMO_ALERT]

    if not line.wait_for(lambda: len(resolved()) >= 2, timeout=30):
        raise TimeoutError(f"run {i + 1}: not resolved at both engines")
    done = sorted(e.at for e in resolved())
    starts = rule_alert.detail["starts_at"]
    return DemoRun(
        prometheus=am_alert.at - t0,
        builtin=rule_alert.at - t0,
        split=split.as_dict(),
        builtin_breach=starts - t0,
        builtin_for=rule_alert.at - starts,
        builtin_engine=(actions[0].at - rule_alert.at) if actions else None,
        resolve_first=done[0] - t_back,
        resolve_last=done[-1] - t_back,
    )


def demo(runs_wanted: int) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scenarios"))

    from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Engine, SafetyPolicy
    from pytest_resilience.engine.alerts import Rule
    from pytest_resilience.monitoring import open_monitoring
    from pytest_resilience.probes import BuiltinProbes
    from pytest_resilience.settings import _DEMO_SERVICES
    from pytest_resilience.targets.local import LocalTarget
    from pytest_resilience.timeline import Timeline

    books = BUNDLED_PLAYBOOKS
    work = Path(tempfile.mkdtemp(prefix="bench-detection-"))
    work.chmod(0o755)  # the demo's Postgres drops root and must reach its data
    target = LocalTarget.from_file(_DEMO_SERVICES, work_dir=work)
    runs: list[DemoRun] = []
    engines: list[Engine] = []
    monitoring = probes = None
    try:
        target.start()
        target.wait_ready("api", timeout=60, replicas=3)
        monitoring = open_monitoring(target)
        assert monitoring.routes_alerts, monitoring.describe()
        print(monitoring.describe(), file=sys.stderr)
        probes = BuiltinProbes(target, None, "api")
        timeline = Timeline("bench")
        no_cooldown = SafetyPolicy(cooldown_s=0, max_actions_per_target=10_000,
                                   max_actions_total=10_000)  # fmt: skip
        common = dict(playbooks_dir=books, timeline=timeline, dry_run=True, safety=no_cooldown)
        # the same rule as the Prometheus one: pool use >= 0.9 (here > 0.9 of max), for 2 s
        rule = Rule(DEMO_ALERT, "pool_use", "above", 0.89, "api", for_s=2.0,
                    severity="critical", labels={"resource": "db_pool"})  # fmt: skip
        via_am = Engine(target, store_path=work / "am.db", listen=monitoring.webhook_listen,
                        own_rules=False, **common)  # fmt: skip
        builtin = Engine(target, store_path=work / "builtin.db", probes=probes.as_mapping(),
                         rules=[rule], eval_interval_s=0.5, **common)  # fmt: skip
        for engine in (via_am, builtin):
            # only this alert: the demo's other rules must not fire incidents of their own
            engine.rules.rules = [r for r in engine.rules.rules if r.alert == DEMO_ALERT]
            engines.append(engine.start())

        for i in range(runs_wanted):
            run = _demo_run(i, runs_wanted, target, monitoring, probes, engines)
            runs.append(run)
            print(f"run {i + 1:2d}: prometheus {run.prometheus:5.2f} s, "
                  f"built-in {run.builtin:5.2f} s", file=sys.stderr)  # fmt: skip
    finally:
        for engine in engines:
            engine.close()
        if probes is not None:
            probes.close()
        if monitoring is not None:
            monitoring.close()
        target.close()
        shutil.rmtree(work, ignore_errors=True)

    def row(label: str, values: list[float]) -> str:
        return (f"{label:<44} median {statistics.median(values):5.2f} s   "
                f"min {min(values):5.2f}   max {max(values):5.2f}")  # fmt: skip

    prom = [r.prometheus for r in runs]
    base = [r.builtin for r in runs]
    print(f"time to detect (fault -> alert at the engine), demo pool leak, {len(runs)} runs")
    print(row("prometheus path (scrape 1s, eval 1s, for 2s, gw 1s)", prom))
    for key, label in (("scrape", "scrape (T0 -> breaking sample stored)"),
                       ("evaluate", "rule evaluation (sample -> pending)"),
                       ("rule_for", "rule for (pending -> firing)"),
                       ("alertmanager", "alertmanager (firing -> webhook)")):  # fmt: skip
        print(row("  " + label, [r.split[key] for r in runs]))
    engine_prom = [r.split["engine"] for r in runs if r.split["engine"] is not None]
    if engine_prom:
        print(row("  engine (webhook -> action started)", engine_prom))
    print(row("built-in path (probe every 0.5s, for 2s)", base))
    print(row("  probe (T0 -> breach seen)", [r.builtin_breach for r in runs]))
    print(row("  rule for (breach -> firing)", [r.builtin_for for r in runs]))
    engine_base = [r.builtin_engine for r in runs if r.builtin_engine is not None]
    if engine_base:
        print(row("  engine (alert -> action started)", engine_base))
    print(row("revert -> first path resolved at its engine", [r.resolve_first for r in runs]))
    print(row("revert -> both resolved", [r.resolve_last for r in runs]))
    print(f"ratio prometheus / built-in (medians): "
          f"{statistics.median(prom) / statistics.median(base):.2f}x; "
          f"extra {statistics.median(prom) - statistics.median(base):.2f} s")  # fmt: skip
    print(json.dumps({"runs": [r.__dict__ for r in runs]}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
