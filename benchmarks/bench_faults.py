"""Time to inject and to revert each fault on the local target (median and p95 of 20 rounds).

    python benchmarks/bench_faults.py [--rounds 20] [--only latency,disk_fill,...]

Starts the small fault test services (tests/local_services/faults.yaml: two HTTP replicas
with 128 MiB memory cgroups on node-a, one proxied HTTP pod with a 16 MiB volume on
node-b), then injects and reverts each fault ``--rounds`` times through a FaultSession
with a real ledger (SQLite, written before the fault acts and closed after its revert),
exactly as the fixtures do. Inject is timed from the call to its return (the fault is in
place: chain installed, toxic added, file allocated, memory resident, processes stopped),
revert likewise (pod_kill's revert waits until the replacement is ready).

Baseline, measured in the same run: a fault that does nothing, through the same session
and ledger; the ratio column says how many times the machinery's own cost each fault takes.
Between rounds the services are waited back to ready (not timed).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_resilience.faults.base import Fault, FaultContext, FaultSession
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.faults.memory import MemoryStress
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.faults.pod_kill import PodKill
from pytest_resilience.faults.toxics import Latency, ProxyDown, Toxic
from pytest_resilience.ledger import Ledger
from pytest_resilience.targets.local import LocalTarget

SERVICES = Path(__file__).resolve().parents[1] / "tests/local_services/faults.yaml"


class Nothing(Fault):
    """The baseline: the FaultSession and ledger round trip with no fault behind it."""

    kind = "nothing"

    def describe(self) -> str:
        return "nothing"

    def inject(self, ctx: FaultContext) -> dict[str, Any]:
        return {"done": True}

    def revert(self, ctx: FaultContext) -> None:
        return None


FAULTS: dict[str, Callable[[LocalTarget], Fault]] = {
    "baseline (no-op fault)": lambda t: Nothing(),
    "network_block pods both": lambda t: NetworkBlock("app=web", direction="both"),
    "network_block port": lambda t: NetworkBlock(port=t.port_of("db")),
    "latency": lambda t: Latency("db", ms=200),
    "toxic bandwidth": lambda t: Toxic("db", "bandwidth", rate=16),
    "proxy_down": lambda t: ProxyDown("db"),
    "disk_fill 90%": lambda t: DiskFill("db", percent=90),
    "memory_stress 80% x2 pods": lambda t: MemoryStress("web", share=0.8),
    "node_failure": lambda t: NodeFailure("node-a"),
    "pod_kill (+replacement)": lambda t: PodKill("app=web", replaced_within_s=30),
}


@dataclass(frozen=True)
class Figures:
    name: str
    inject_s: list[float]
    revert_s: list[float]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def measure(target: LocalTarget, session: FaultSession, name: str, rounds: int) -> Figures:
    inject, revert = [], []
    for _ in range(rounds):
        for workload in target.workloads():
            target.wait_ready(workload.name, timeout=30)
        fault = FAULTS[name](target)
        started = time.perf_counter()
        handle = session.inject(fault)
        injected = time.perf_counter()
        handle.revert()
        reverted = time.perf_counter()
        inject.append(injected - started)
        revert.append(reverted - injected)
    return Figures(name, inject, revert)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", help="comma-separated fault names (prefixes) to run")
    args = parser.parse_args()
    names = list(FAULTS)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        names = [names[0]] + [n for n in names[1:] if any(n.startswith(w) for w in wanted)]

    place = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    place.chmod(0o755)
    services = place / "services.yaml"
    services.write_text(SERVICES.read_text().replace("@HERE@", str(SERVICES.parent.resolve())))
    ledger = Ledger(place / "ledger.sqlite")
    results: list[Figures] = []
    try:
        with LocalTarget.from_file(services, work_dir=place / "work") as target:
            session = FaultSession(target, ledger=ledger)
            print(
                f"local target: memory {target.memory_enforcement}, toxiproxy "
                f"{target.toxiproxy_kind}; {args.rounds} rounds per fault",
                flush=True,
            )
            for name in names:
                results.append(measure(target, session, name, args.rounds))
                print(f"  measured {name}", file=sys.stderr, flush=True)
    finally:
        ledger.close_db()
        shutil.rmtree(place, ignore_errors=True)

    base = results[0]
    base_total = statistics.median(base.inject_s) + statistics.median(base.revert_s)
    header = f"{'fault':28} {'inject med':>11} {'inject p95':>11} {'revert med':>11} "
    header += f"{'revert p95':>11} {'x baseline':>11}"
    print(header)
    print("-" * len(header))
    for fig in results:
        total = statistics.median(fig.inject_s) + statistics.median(fig.revert_s)
        print(
            f"{fig.name:28} {_ms(statistics.median(fig.inject_s))} {_ms(p95(fig.inject_s))} "
            f"{_ms(statistics.median(fig.revert_s))} {_ms(p95(fig.revert_s))} "
            f"{total / base_total:>10.1f}x"
        )
    print("(ms; x baseline = (inject + revert medians) / the no-op fault's, same session)")
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:>9.1f}ms"


if __name__ == "__main__":
    sys.exit(main())
