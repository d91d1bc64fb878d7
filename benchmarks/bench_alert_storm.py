"""Alert storm: 10,000 alerts (many duplicates, many targets) through the engine's webhook.

Run: python benchmarks/bench_alert_storm.py [--alerts 10000] [--targets 400]
     [--client process|thread] [--no-kill] [--baseline REF [--runs 3]]

Prints alerts/s accepted over HTTP, the same alerts submitted in-process as the
baseline (the HTTP cost is the ratio), incidents opened, actions recorded (dry-run, so
nothing is touched; must stay within the safety caps) and the decision latency from
alert received to first action start (p50/p99).

The HTTP client (Alertmanager's part) runs in its own process by default, as it does in
production; ``--client thread`` runs it on the benchmark's own interpreter, where it takes
the GIL from the engine it measures (the figures before the durable intake were taken so).

Last, the ceiling: the same POSTs from the same client process to a webhook whose sink
stores and decides nothing, i.e. what the client and HTTP alone reach on this machine at
this moment; the engine's decided/s is read against it.

Then the durability check: a ``serve`` subprocess gets the same storm, is SIGKILLed once
half of the bodies were answered 200, and is restarted on the same store; every alert
answered 200 must be in the store once the restarted engine has decided its inbox.

``--baseline REF`` checks REF out in a temporary git worktree and runs this benchmark (the
same client, storm and figures) against REF's engine and HEAD's in turn, ``--runs`` times
each, alternated so the shared machine's noise falls on both; it prints each run and the
medians with their ratio (HEAD/REF), then removes the worktree.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
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


def bodies_of(alerts: list[dict], batch: int) -> list[dict]:
    groups = [alerts[i : i + batch] for i in range(0, len(alerts), batch)]
    redelivered = groups[: len(groups) // 10]  # Alertmanager re-sending identical groups
    bodies = [
        {"version": "4", "groupKey": f"g{i}", "status": "firing", "alerts": group}
        for i, group in enumerate(groups)
    ]
    return bodies + bodies[: len(redelivered)]


async def post_all(
    url: str,
    alerts: list[dict],
    batch: int,
    concurrency: int,
    *,
    answered: Counter | None = None,
    kill_after: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """POST the storm; ``answered`` counts the fingerprints of alerts taken with a 200.

    ``kill_after=(bodies, pid)``: SIGKILL ``pid`` once that many bodies were taken, then
    stop sending (what was in flight fails with the connection).
    """
    bodies = bodies_of(alerts, batch)
    semaphore = asyncio.Semaphore(concurrency)
    pushed_back = taken = 0
    killed = asyncio.Event()

    async def send(session: aiohttp.ClientSession, body: dict) -> None:
        nonlocal pushed_back, taken
        async with semaphore:
            while not killed.is_set():
                try:
                    async with session.post(f"{url}/alerts", json=body) as response:
                        if response.status != 503:
                            assert response.status == 200, await response.text()
                            answer = await response.json()
                            break
                except aiohttp.ClientError:
                    if killed.is_set():
                        return
                    raise
                pushed_back += 1
                await asyncio.sleep(0.05)  # Alertmanager would back off and retry
            else:
                return
            if answer.get("accepted") and answered is not None:
                answered.update(a["fingerprint"] for a in body["alerts"])
            taken += 1
            if kill_after is not None and taken == kill_after[0]:
                os.kill(kill_after[1], signal.SIGKILL)
                killed.set()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(send(session, b) for b in bodies))
    return len(bodies), pushed_back


def post_from_process(url: str, args: argparse.Namespace) -> tuple[int, int, float]:
    """The storm from a child process (Alertmanager's side): (posts, 503s, seconds)."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--post", url, "--alerts", str(args.alerts),
         "--targets", str(args.targets), "--batch", str(args.batch),
         "--concurrency", str(args.concurrency)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"  # imported and built: time the POSTs only
    start = time.perf_counter()
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    assert child.wait(timeout=60) == 0
    return result["posts"], result["pushed_back"], start


def _child_post(args: argparse.Namespace) -> None:
    alerts = storm(args.alerts, args.targets)
    print("ready", flush=True)
    sys.stdin.readline()
    posts, pushed_back = asyncio.run(post_all(args.post, alerts, args.batch, args.concurrency))
    print(json.dumps({"posts": posts, "pushed_back": pushed_back}), flush=True)


def _store_count(db: Path, sql: str) -> int | None:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    except sqlite3.OperationalError:
        return None
    try:
        return int(connection.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # no such table (no inbox before the durable intake)
        return None
    finally:
        connection.close()


def _serve(db: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_resilience.engine", "serve", "--store", str(db),
         "--listen", "127.0.0.1:0", "--dry-run", "--log-level", "ERROR"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://[\d.:]+)/alerts", line)
    assert match, line
    return proc, match.group(1)


def sigkill_mid_storm(alerts: list[dict], args: argparse.Namespace) -> dict[str, int]:
    """Alerts answered 200 against alerts the store holds after a SIGKILL and a restart."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "engine.db"
        proc, url = _serve(db)
        answered: Counter = Counter()
        half = len(bodies_of(alerts, args.batch)) // 2
        try:
            asyncio.run(
                post_all(url, alerts, args.batch, args.concurrency,
                         answered=answered, kill_after=(half, proc.pid))
            )  # fmt: skip
        finally:
            proc.kill()
            proc.wait()
        at_kill = _store_count(db, "SELECT COUNT(*) FROM inbox")
        proc, url = _serve(db)
        try:
            deadline = time.monotonic() + 60  # the restarted engine decides its inbox
            while (_store_count(db, "SELECT COUNT(*) FROM inbox") or 0) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        stored = Counter(f for (f,) in connection.execute("SELECT fingerprint FROM alerts"))
        connection.close()
    lost = sum(max(0, n - stored[f]) for f, n in answered.items())
    return {
        "answered": sum(answered.values()),
        "stored": sum(stored.values()),
        "in_inbox_at_kill": at_kill if at_kill is not None else -1,
        "lost": lost,
    }


class NullSink:
    """Takes every body and stores nothing: the webhook and client alone (the ceiling)."""

    def take(self, deliveries):
        return [True] * len(deliveries)

    def receive(self, alerts):  # the sink protocol before Engine.take
        done: Future[bool] = Future()
        done.set_result(True)
        return done


def ceiling(args: argparse.Namespace) -> float:
    """Alerts/s the client and the webhook reach with nothing stored or decided."""
    from pytest_resilience.engine.webhook import WebhookServer

    server = WebhookServer(NullSink(), "127.0.0.1:0")
    url = server.start()
    try:
        start = post_from_process(url, args)[2]
        return args.alerts / (time.perf_counter() - start)
    finally:
        server.stop()


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


def measure(args: argparse.Namespace) -> dict:
    """One storm in-process, one over the webhook, and (unless ``--no-kill``) the SIGKILL."""
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
            assert engine.webhook_url is not None
            cpu = time.process_time()  # the engine's threads (the client is another process)
            if args.client == "process":
                posts, pushed_back, start = post_from_process(engine.webhook_url, args)
            else:
                start = time.perf_counter()
                posts, pushed_back = asyncio.run(
                    post_all(engine.webhook_url, alerts, args.batch, args.concurrency)
                )
            accepted_s = time.perf_counter() - start
            assert engine.wait_idle(300)
            total_s = time.perf_counter() - start
            http = figures(engine, accepted_s, len(alerts))
            http["decided_per_s"] = len(alerts) / total_s
            http["cpu_us_per_alert"] = (time.process_time() - cpu) / len(alerts) * 1e6
            decisions = engine.store.alert_decisions()
        finally:
            engine.close()
    kinds: dict[str, int] = {}
    for decision, count in decisions.items():  # "inhibited: X on svc-1 ..." -> "inhibited"
        kind = decision.split(":", 1)[0]
        kinds[kind] = kinds.get(kind, 0) + count
    return {
        "alerts": len(alerts),
        "unique": len({(a["labels"]["alertname"], a["labels"]["service"]) for a in alerts}),
        "posts": posts,
        "pushed_back": pushed_back,
        "http": http,
        "direct": direct,
        "decisions": dict(sorted(kinds.items())),
        "kill": None if args.no_kill else sigkill_mid_storm(alerts, args),
        "ceiling_per_s": ceiling(args) if args.client == "process" else None,
    }


def report(result: dict, args: argparse.Namespace) -> None:
    http, direct = result["http"], result["direct"]
    again = result["posts"] - result["alerts"] // args.batch
    print(f"alert storm: {result['alerts']} alerts, {result['unique']} distinct (alert, target), "
          f"{args.targets} targets, {result['posts']} POSTs of {args.batch} ({again} identical "
          f"re-deliveries), {result['pushed_back']} answered 503")  # fmt: skip
    print(f"caps: {POLICY.max_actions_per_target}/target, {POLICY.max_actions_total} overall "
          f"per {POLICY.window_s:.0f}s; cooldown {POLICY.cooldown_s:.0f}s")  # fmt: skip
    print(f"HTTP client in its own {args.client}")
    print(f"{'':28}{'webhook (HTTP)':>16}{'in-process':>14}")
    print(f"{'alerts/s accepted':28}{http['alerts_per_s']:16.0f}{'-':>14}")
    print(f"{'alerts/s decided (end-to-end)':28}{http['decided_per_s']:16.0f}"
          f"{direct['alerts_per_s']:14.0f}"
          f"   (HTTP/in-process {http['decided_per_s'] / direct['alerts_per_s']:.2f})")  # fmt: skip
    print(f"{'incidents opened':28}{http['incidents']:16d}{direct['incidents']:14d}")
    print(f"{'actions recorded (dry-run)':28}{http['actions']:16d}{direct['actions']:14d}"
          f"   (cap {POLICY.max_actions_total})")  # fmt: skip
    print(f"{'decision latency p50 ms':28}{http['p50_ms']:16.1f}{direct['p50_ms']:14.1f}")
    print(f"{'decision latency p99 ms':28}{http['p99_ms']:16.1f}{direct['p99_ms']:14.1f}")
    print(f"{'engine CPU us per alert':28}{http['cpu_us_per_alert']:16.1f}{'-':>14}"
          f"   (the least noisy figure on a shared machine)")  # fmt: skip
    print("alert decisions (HTTP run):", result["decisions"])
    if result.get("ceiling_per_s"):
        print(f"ceiling: the same POSTs to a webhook that stores and decides nothing: "
              f"{result['ceiling_per_s']:.0f} alerts/s (the client and HTTP alone, this "
              f"machine, now)")  # fmt: skip
    kill = result["kill"]
    if kill is not None:
        print(f"SIGKILL mid-storm (serve, restarted on its store): {kill['answered']} alerts "
              f"answered 200, {kill['stored']} in the store after restart "
              f"({kill['in_inbox_at_kill']} were in the inbox at the kill), "
              f"{kill['lost']} answered 200 and lost")  # fmt: skip


def _forwarded(args: argparse.Namespace) -> list[str]:
    argv = ["--alerts", str(args.alerts), "--targets", str(args.targets),
            "--batch", str(args.batch), "--concurrency", str(args.concurrency),
            "--client", args.client]  # fmt: skip
    return argv + (["--no-kill"] if args.no_kill else [])


def _run_with(src: Path, args: argparse.Namespace) -> dict:
    """This benchmark in a fresh interpreter importing the engine from ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}  # ahead of the editable install's path
    done = subprocess.run(
        [sys.executable, __file__, "--json", *_forwarded(args)],
        env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"benchmark against {src} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    """HEAD's engine against ``--baseline REF``'s, runs alternated so noise falls on both."""
    base_dir = Path(tempfile.mkdtemp(prefix="bench-storm-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach",
                    str(base_dir), args.baseline], check=True)  # fmt: skip
    runs: dict[str, list[dict]] = {"baseline": [], "head": []}
    try:
        for index in range(args.runs):
            for side, src in (("baseline", base_dir / "src"), ("head", ROOT / "src")):
                result = _run_with(src, args)
                runs[side].append(result)
                kill = result["kill"]
                print(f"run {index + 1} {side:8}: decided {result['http']['decided_per_s']:6.0f}"
                      f"/s, p99 {result['http']['p99_ms']:7.1f} ms, in-process "
                      f"{result['direct']['alerts_per_s']:6.0f}/s, CPU "
                      f"{result['http']['cpu_us_per_alert']:5.1f} us/alert, actions "
                      f"{result['http']['actions']}, SIGKILL lost "
                      f"{kill['lost'] if kill else '-'}", flush=True)  # fmt: skip
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                        str(base_dir)], check=False)  # fmt: skip

    def median(side: str, pick: Callable[[dict], float]) -> float:
        return statistics.median(pick(r) for r in runs[side])

    rows = [
        ("alerts/s decided (webhook)", lambda r: r["http"]["decided_per_s"], ".0f"),
        ("decision latency p50 ms", lambda r: r["http"]["p50_ms"], ".1f"),
        ("decision latency p99 ms", lambda r: r["http"]["p99_ms"], ".1f"),
        ("engine CPU us/alert (webhook)", lambda r: r["http"].get("cpu_us_per_alert", 0), ".1f"),
        ("alerts/s decided (in-process)", lambda r: r["direct"]["alerts_per_s"], ".0f"),
        ("ceiling alerts/s (null sink)", lambda r: r.get("ceiling_per_s") or 0, ".0f"),
        ("actions recorded (webhook)", lambda r: r["http"]["actions"], ".0f"),
    ]
    if not args.no_kill:
        rows.append(("SIGKILL: answered 200 and lost", lambda r: r["kill"]["lost"], ".0f"))
    print(f"\nmedian of {args.runs} alternated runs, {args.alerts} alerts; 'per pair': the "
          f"median of HEAD/base within each pair of neighbouring runs (the noise they share "
          f"cancels)")  # fmt: skip
    print(f"{'':32}{args.baseline:>12}{'HEAD':>12}{'HEAD/base':>11}{'per pair':>10}")
    for label, pick, fmt in rows:
        then, now = median("baseline", pick), median("head", pick)
        ratio = f"{now / then:.2f}" if then else "-"
        both = zip(runs["baseline"], runs["head"], strict=True)
        pairs = [pick(h) / pick(b) for b, h in both if pick(b)]
        paired = f"{statistics.median(pairs):.2f}" if pairs else "-"
        print(f"{label:32}{then:12{fmt}}{now:12{fmt}}{ratio:>11}{paired:>10}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=400)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=("process", "thread"), default="process")
    parser.add_argument("--no-kill", action="store_true", help="skip the SIGKILL check")
    parser.add_argument("--baseline", metavar="REF", help="also run REF's engine, alternated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each with --baseline")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--post", help=argparse.SUPPRESS)  # the child process's side
    args = parser.parse_args()
    if args.post:
        _child_post(args)
        return
    if args.baseline:
        compare(args)
        return
    result = measure(args)
    assert result["http"]["actions"] <= POLICY.max_actions_total
    if args.json:
        print(json.dumps(result))
    else:
        report(result, args)


if __name__ == "__main__":
    main()
