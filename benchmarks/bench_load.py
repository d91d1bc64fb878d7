"""Throughput of Locust driven through ``start_load()``: one process, then N workers.

    python benchmarks/bench_load.py [--users 10] [--seconds 15] [--rounds 1]
        [--workers 1,2,auto] [--no-bare]

Part 1 (skipped with --no-bare), start_load() against bare ``locust --headless``:

Target: two replicas of the small aiohttp server in tests/load_fixtures/http_target.py
sharing one port (SO_REUSEPORT), not the demo API, so the figure depends on nothing but
this machine. Both runs use tests/load_fixtures/locustfile.py with no wait between tasks
(``LOAD_FIXTURE_WAIT_S=0``), so Locust is CPU-bound and any overhead of the driver (its
request hook, per-second JSON lines, the parent's reader thread) shows up as lost requests.

Printed per run: requests/s over the run and requests per CPU-second of the Locust process
(from the rusage of reaped children, so it is robust to other load on the machine), then
the ratios b/a. Goal: b/a >= 0.9.

Part 2, ``start_load(workers=N)`` for each N of --workers (``auto`` = one per core; 1 is
the single process, no master) against the same replicas, side by side: requests/s, its
ratio to one process, requests per CPU-second of the Locust processes (master included),
and the CPU the target replicas used meanwhile. On a machine where Locust and the target
share the cores, req/s stops growing once both together fill them; req per Locust CPU-second
is what predicts a runner with more cores: cores given to Locust x that figure, as long
as the target keeps up (its CPU column says how much it took).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from pytest_resilience.load import start_load

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "load_fixtures"
LOCUSTFILE = FIXTURES / "locustfile.py"


@dataclass
class Result:
    label: str
    requests: int
    failures: int
    seconds: float
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.cpu_s if self.cpu_s else float("nan")

    def line(self) -> str:
        return (
            f"{self.label:<28} {self.requests:>8} req {self.failures:>5} fail "
            f"{self.seconds:6.2f} s  {self.rps:8.1f} req/s  {self.cpu_s:6.2f} cpu-s  "
            f"{self.per_cpu_s:8.1f} req/cpu-s"
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_replicas(count: int) -> tuple[list[subprocess.Popen[str]], str]:
    replicas: list[subprocess.Popen[str]] = []
    port = 0
    for _ in range(count):
        process = subprocess.Popen(
            [sys.executable, str(FIXTURES / "http_target.py"), "--reuse-port", "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        replicas.append(process)
        assert process.stdout is not None
        port = json.loads(process.stdout.readline())["port"]
    return replicas, f"http://127.0.0.1:{port}"


def run_bare(host: str, users: int, seconds: int, env: dict[str, str]) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "bench")
        command = [
            sys.executable,
            "-m",
            "locust",
            "--headless",
            "-u",
            str(users),
            "-r",
            str(users),
            "-t",
            f"{seconds}s",
            "--host",
            host,
            "-f",
            str(LOCUSTFILE),
            "--csv",
            prefix,
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        cpu_before = _children_cpu()
        started = time.time()
        subprocess.run(command, env=env, check=False, capture_output=True, text=True)
        wall = time.time() - started
        cpu = _children_cpu() - cpu_before
        with open(f"{prefix}_stats.csv", newline="") as handle:
            aggregated = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    requests = int(aggregated["Request Count"])
    failures = int(aggregated["Failure Count"])
    # Locust's own Requests/s spans first to last request; the run itself lasts `seconds`.
    print(
        f"   (bare: locust's own Requests/s {float(aggregated['Requests/s']):.1f}, "
        f"process wall {wall:.1f} s incl. start-up)"
    )
    return Result("a: locust --headless", requests, failures, float(seconds), cpu)


def run_driven(host: str, users: int, seconds: int, env: dict[str, str]) -> Result:
    cpu_before = _children_cpu()
    run = start_load(
        host=host,
        users=users,
        spawn_rate=float(users),
        locustfile=LOCUSTFILE,
        env=env,
        run_time=float(seconds),
    )
    totals = run.wait(timeout=seconds + 60)
    run.stop()
    cpu = _children_cpu() - cpu_before
    samples = run.samples
    elapsed = samples[-1].at - samples[0].start
    return Result("b: start_load()", totals.requests, totals.failures, elapsed, cpu)


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


@dataclass
class Steady:
    result: Result
    target_cpu_s: float
    master_cpu_s: float


def run_steady(
    host: str, users: int, seconds: int, env: dict[str, str], workers: int, target: list[int]
) -> Steady:
    """``seconds`` whole samples once every user runs; CPU of exactly those seconds.

    Start-up (importing Locust in 1 + N processes, spawning) is left out on purpose: it is
    paid once per run, and counting it would make more workers look dearer per request.
    """
    run = start_load(
        host=host,
        users=users,
        spawn_rate=float(users) * 4,
        locustfile=LOCUSTFILE,
        env=env,
        workers=workers,
    )
    try:
        first = len(run.wait_for_samples(2, timeout=60))  # the ramp-up second is behind us
        pids = [run.pid, *run.worker_pids]
        master = pids[:1] if run.worker_pids else []
        before = (_cpu_of(pids), _cpu_of(target), _cpu_of(master))
        samples = run.wait_for_samples(first + seconds, timeout=seconds + 60)
        after = (_cpu_of(pids), _cpu_of(target), _cpu_of(master))
    finally:
        run.stop()
    window = samples[first : first + seconds]
    label = "start_load()" if workers == 1 else f"start_load(workers={workers})"
    result = Result(
        label,
        sum(s.requests for s in window),
        sum(s.failures for s in window),
        sum(s.interval_s for s in window),
        after[0] - before[0],
    )
    return Steady(result, after[1] - before[1], after[2] - before[2])


def run_workers(
    host: str,
    replicas: list[subprocess.Popen[str]],
    counts: list[int],
    args: argparse.Namespace,
    env: dict[str, str],
) -> None:
    runs: dict[int, list[Steady]] = {n: [] for n in counts}
    target = [process.pid for process in replicas]
    for index in range(args.rounds):
        order = counts if index % 2 == 0 else list(reversed(counts))
        for workers in order:
            steady = run_steady(host, args.users, args.seconds, env, workers, target)
            runs[workers].append(steady)
            print(steady.result.line())
    base = _rps(runs[counts[0]]) if counts[0] == 1 else float("nan")
    print()
    print(
        f"{'workers':>7} {'processes':>9} {'req/s':>9} {'x 1 proc':>8} {'req/cpu-s':>10} "
        f"{'locust cpu':>10} {'of it master':>12} {'target cpu':>10}"
    )
    for workers in counts:
        rows = runs[workers]
        seconds = sum(r.result.seconds for r in rows)
        locust_cpu = sum(r.result.cpu_s for r in rows)
        requests = sum(r.result.requests for r in rows)
        print(
            f"{workers:>7} {1 if workers == 1 else workers + 1:>9} {_rps(rows):>9.1f} "
            f"{_rps(rows) / base:>8.2f} {requests / locust_cpu:>10.1f} "
            f"{locust_cpu / seconds:>9.2f}c "
            f"{sum(r.master_cpu_s for r in rows) / seconds:>11.2f}c "
            f"{sum(r.target_cpu_s for r in rows) / seconds:>9.2f}c"
        )
    print("(c = cores busy on average over the measured seconds; target = the aiohttp replicas)")


def _worker_counts(spec: str) -> list[int]:
    counts: list[int] = []
    for part in spec.split(","):
        count = (os.cpu_count() or 1) if part.strip() == "auto" else int(part)
        if count not in counts:
            counts.append(count)
    return counts


def _rps(rows: list[Steady]) -> float:
    return sum(r.result.requests for r in rows) / sum(r.result.seconds for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1, help="a/b pairs, order alternating")
    parser.add_argument("--workers", default="1,2,auto", help="worker counts for part 2")
    parser.add_argument("--replicas", type=int, default=2, help="target replicas")
    parser.add_argument("--no-bare", action="store_true", help="skip part 1 (bare locust)")
    args = parser.parse_args()

    env = {**os.environ, "LOAD_FIXTURE_WAIT_S": "0"}
    replicas, host = start_replicas(args.replicas)
    print(
        f"target: {args.replicas} aiohttp replicas of http_target.py on {host} (SO_REUSEPORT); "
        f"users={args.users}, {args.seconds} s per run, cpus={os.cpu_count()}"
    )
    bare: list[Result] = []
    driven: list[Result] = []
    try:
        for index in range(0 if args.no_bare else args.rounds):
            order = [run_bare, run_driven] if index % 2 == 0 else [run_driven, run_bare]
            for runner in order:
                result = runner(host, args.users, args.seconds, env)
                (bare if runner is run_bare else driven).append(result)
                print(result.line())
        if not args.no_bare:
            _print_bare(bare, driven)
        print()
        run_workers(host, replicas, _worker_counts(args.workers), args, env)
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(10)
            if process.stdout:
                process.stdout.close()
    return 0


def _print_bare(bare: list[Result], driven: list[Result]) -> None:
    a_rps = sum(r.requests for r in bare) / sum(r.seconds for r in bare)
    b_rps = sum(r.requests for r in driven) / sum(r.seconds for r in driven)
    a_cpu = sum(r.requests for r in bare) / sum(r.cpu_s for r in bare)
    b_cpu = sum(r.requests for r in driven) / sum(r.cpu_s for r in driven)
    print(f"throughput a (bare)        {a_rps:8.1f} req/s   {a_cpu:8.1f} req/cpu-s")
    print(f"throughput b (start_load)  {b_rps:8.1f} req/s   {b_cpu:8.1f} req/cpu-s")
    print(
        f"ratio b/a                  {b_rps / a_rps:8.3f} (req/s)  {b_cpu / a_cpu:6.3f} (req/cpu-s)"
    )
    print("goal: b/a >= 0.9")


if __name__ == "__main__":
    sys.exit(main())
