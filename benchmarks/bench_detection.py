"""Detection latency through real Prometheus and Alertmanager: threshold crossed -> webhook.

    python benchmarks/bench_detection.py [--runs 10]

Each run sets ``demo_db_pool_in_use`` to the pool's size on a real /metrics endpoint (T0),
waits for Alertmanager's webhook for DatabaseConnectionPoolExhaustion, then puts the pool
back and waits for the resolved webhook. The split comes from the servers' own clocks:

    scrape      T0 -> first stored sample with the new value (Prometheus scrape timestamp)
    evaluate    sample -> alert pending (activeAt: the first rule evaluation that matched)
    for         pending -> firing (first ALERTS{alertstate="firing"} sample; rule `for: 2s`)
    notify      firing -> Alertmanager received it (its updatedAt)
    dispatch    received -> webhook arrived (group_wait 1s)

The baseline is the rule's ``for`` (the delay asked for); the ratio says how much the
intervals and transport add to it. The worst case by configuration is scrape interval +
evaluation interval + ``for`` + group_wait (or group_interval once the group exists).
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
    args = parser.parse_args()
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
            for i in range(args.runs):
                run = one_run(prom, am, exporter, receiver, probe, phase_s=i / args.runs)
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


if __name__ == "__main__":
    sys.exit(main())
