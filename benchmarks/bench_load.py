"""Throughput of Locust driven through ``start_load()`` against bare ``locust --headless``.

    python benchmarks/bench_load.py [--users 10] [--seconds 15] [--rounds 1]

Target: two replicas of the small aiohttp server in tests/load_fixtures/http_target.py
sharing one port (SO_REUSEPORT), not the demo API, so the figure depends on nothing but
this machine. Both runs use tests/load_fixtures/locustfile.py with no wait between tasks
(``LOAD_FIXTURE_WAIT_S=0``), so Locust is CPU-bound and any overhead of the driver (its
request hook, per-second JSON lines, the parent's reader thread) shows up as lost requests.

Printed per run: requests/s over the run and requests per CPU-second of the Locust process
(from the rusage of reaped children, so it is robust to other load on the machine), then
the ratios b/a. Goal: b/a >= 0.9.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1, help="a/b pairs, order alternating")
    args = parser.parse_args()

    env = {**os.environ, "LOAD_FIXTURE_WAIT_S": "0"}
    replicas, host = start_replicas(2)
    print(
        f"target: 2 aiohttp replicas of http_target.py on {host} (SO_REUSEPORT); "
        f"users={args.users}, {args.seconds} s per run, cpus={os.cpu_count()}"
    )
    bare: list[Result] = []
    driven: list[Result] = []
    try:
        for index in range(args.rounds):
            order = [run_bare, run_driven] if index % 2 == 0 else [run_driven, run_bare]
            for runner in order:
                result = runner(host, args.users, args.seconds, env)
                (bare if runner is run_bare else driven).append(result)
                print(result.line())
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(10)
            if process.stdout:
                process.stdout.close()

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
