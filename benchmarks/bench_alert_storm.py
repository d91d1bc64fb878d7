"""Alert storm: 10,000 alerts (many duplicates, many targets) through the engine's webhook.

Run: python benchmarks/bench_alert_storm.py [--alerts 10000] [--targets 400]

Prints alerts/s accepted over HTTP, the same alerts submitted in-process as the
baseline (the HTTP cost is the ratio), incidents opened, actions recorded (dry-run, so
nothing is touched; must stay within the safety caps) and the decision latency from
alert received to first action start (p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Alert, Engine, SafetyPolicy
from pytest_resilience.targets.base import ExecResult, Node, Pod, Workload

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["HighMemoryUsage", "DatabaseConnectionPoolExhaustion", "CacheHitRatioDegraded",
         "HighCPU", "ErrorRateHighCritical"]  # fmt: skip
POLICY = SafetyPolicy(
    cooldown_s=600, window_s=3600, max_actions_per_target=3, max_actions_total=500
)


class NoopTarget:
    """A platform that accepts everything and changes nothing (the engine runs dry anyway)."""

    name = "noop"

    def pods(self, selector="", *, namespace=None):
        return [Pod("api-1", "api", ready=True)]

    def workloads(self):
        return [Workload("api", replicas=1, ready_replicas=1)]

    def nodes(self):
        return [Node("n1")]

    def exec(self, pod, argv, *, timeout=30.0):
        return ExecResult(0, "", "")

    def rollback(self, workload):
        return "previous"

    def subscribe(self, callback):
        return lambda: None

    def endpoint(self, workload):
        return ""

    def __getattr__(self, name):  # kill_pod, scale, restart, cordon, drain, wait_ready, ...
        return lambda *a, **k: None


def storm(n_alerts: int, n_targets: int, seed: int = 7) -> list[dict]:
    """Unique (alert, target) pairs, each repeated ~5 times: 1 in 5 alerts is new."""
    rng = random.Random(seed)
    unique = max(1, n_alerts // 5)
    pairs = [(rng.choice(NAMES), f"svc-{rng.randrange(n_targets)}") for _ in range(unique)]
    alerts = []
    for i in range(n_alerts):
        name, target = pairs[i % unique]
        alerts.append({
            "status": "firing",
            "labels": {"alertname": name, "service": target, "severity": "warning"},
            "annotations": {"value": "0.97"},
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{name}-{target}",
        })  # fmt: skip
    rng.shuffle(alerts)
    return alerts


async def post_all(url: str, alerts: list[dict], batch: int, concurrency: int) -> tuple[int, int]:
    groups = [alerts[i : i + batch] for i in range(0, len(alerts), batch)]
    redelivered = groups[: len(groups) // 10]  # Alertmanager re-sending identical groups
    bodies = [
        {"version": "4", "groupKey": f"g{i}", "status": "firing", "alerts": group}
        for i, group in enumerate(groups)
    ]
    bodies += bodies[: len(redelivered)]
    semaphore = asyncio.Semaphore(concurrency)
    pushed_back = 0

    async def send(session: aiohttp.ClientSession, body: dict) -> None:
        nonlocal pushed_back
        async with semaphore:
            while True:
                async with session.post(f"{url}/alerts", json=body) as response:
                    if response.status != 503:
                        assert response.status == 200, await response.text()
                        return
                pushed_back += 1
                await asyncio.sleep(0.05)  # Alertmanager would back off and retry

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(send(session, b) for b in bodies))
    return len(bodies), pushed_back


def run_engine(work: Path, *, listen: str | None) -> Engine:
    return Engine(
        NoopTarget(),
        playbooks_dir=BUNDLED_PLAYBOOKS,
        store_path=work / "engine.db",
        dry_run=True,
        listen=listen,
        safety=POLICY,
        max_queue=20_000,
    ).start()


def figures(engine: Engine, seconds: float, n_alerts: int) -> dict[str, float]:
    incidents = {i.id: i for i in engine.incidents()}
    first: dict[str, float] = {}
    for action in engine.actions():
        first.setdefault(action.incident_id, action.started_at)
    latencies = sorted(at - incidents[i].alert.received_at for i, at in first.items())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0
    return {
        "alerts_per_s": n_alerts / seconds,
        "incidents": len(incidents),
        "actions": len(engine.actions()),
        "p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
        "p99_ms": p99 * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=400)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    alerts = storm(args.alerts, args.targets)

    with tempfile.TemporaryDirectory() as tmp:
        engine = run_engine(Path(tmp), listen=None)
        try:
            start = time.perf_counter()
            for a in alerts:
                labels = a["labels"]
                name, target = labels["alertname"], labels["service"]
                alert = Alert(name, target, labels=labels, fingerprint=a["fingerprint"],
                              value=0.97, source="webhook")  # fmt: skip
                engine.submit(alert)
            assert engine.wait_idle(300)
            direct = figures(engine, time.perf_counter() - start, len(alerts))
        finally:
            engine.close()

    with tempfile.TemporaryDirectory() as tmp:
        engine = run_engine(Path(tmp), listen="127.0.0.1:0")
        try:
            start = time.perf_counter()
            posts, pushed_back = asyncio.run(
                post_all(engine.webhook_url, alerts, args.batch, args.concurrency)
            )
            accepted_s = time.perf_counter() - start
            assert engine.wait_idle(300)
            total_s = time.perf_counter() - start
            http = figures(engine, accepted_s, len(alerts))
            decided = len(alerts) / total_s
            decisions = engine.store.alert_decisions()
        finally:
            engine.close()

    unique = len({(a["labels"]["alertname"], a["labels"]["service"]) for a in alerts})
    again = posts - len(alerts) // args.batch
    print(f"alert storm: {len(alerts)} alerts, {unique} distinct (alert, target), "
          f"{args.targets} targets, {posts} POSTs of {args.batch} ({again} identical "
          f"re-deliveries), {pushed_back} answered 503")  # fmt: skip
    print(f"caps: {POLICY.max_actions_per_target}/target, {POLICY.max_actions_total} overall "
          f"per {POLICY.window_s:.0f}s; cooldown {POLICY.cooldown_s:.0f}s")  # fmt: skip
    print(f"{'':28}{'webhook (HTTP)':>16}{'in-process':>14}")
    print(f"{'alerts/s accepted':28}{http['alerts_per_s']:16.0f}{'-':>14}")
    print(f"{'alerts/s decided (end-to-end)':28}{decided:16.0f}{direct['alerts_per_s']:14.0f}"
          f"   (HTTP/in-process {decided / direct['alerts_per_s']:.2f})")  # fmt: skip
    print(f"{'incidents opened':28}{http['incidents']:16d}{direct['incidents']:14d}")
    print(f"{'actions recorded (dry-run)':28}{http['actions']:16d}{direct['actions']:14d}"
          f"   (cap {POLICY.max_actions_total})")  # fmt: skip
    print(f"{'decision latency p50 ms':28}{http['p50_ms']:16.1f}{direct['p50_ms']:14.1f}")
    print(f"{'decision latency p99 ms':28}{http['p99_ms']:16.1f}{direct['p99_ms']:14.1f}")
    kinds: dict[str, int] = {}
    for decision, count in decisions.items():  # "inhibited: X on svc-1 ..." -> "inhibited"
        kind = decision.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + count
    print("alert decisions (HTTP run):", dict(sorted(kinds.items())))
    assert http["actions"] <= POLICY.max_actions_total


if __name__ == "__main__":
    main()
