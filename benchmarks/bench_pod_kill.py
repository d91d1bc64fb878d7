"""How fast the local target replaces a SIGKILLed API pod of the demo (goal: <= 1 s).

    python benchmarks/bench_pod_kill.py [--kills 20] [--workload api] [--services PATH]

Starts the bundled demo (Postgres, Redis, 3 API replicas) with LocalTarget, then kills one
ready pod of the workload ``--kills`` times through ``target.kill_pod`` (SIGKILL). Each kill
is timed from the signal to the POD_READY event of its replacement, split into the stages
a reviewer asks about: noticed (kill -> POD_DIED), the planned restart back-off (from the
POD_DIED detail), spawn (POD_DIED -> POD_STARTED) and readiness (POD_STARTED -> POD_READY).
Before the next kill the workload is back to its full replica count (``wait_ready``).

Kills come back to back, so the local target's restart back-off (per service, doubling
per death up to ``max_backoff_s``, reset once a pod stays ready ``reset_after_s``) grows
over the run: the "less the back-off" line is the supervisor's own cost without it.
"""

from __future__ import annotations

import argparse
import queue
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_resilience.targets.base import EventKind, TargetEvent
from pytest_resilience.targets.local import LocalTarget

DEMO = Path(__file__).resolve().parents[1] / "src/pytest_resilience/demo/services.yaml"
GOAL_S = 1.0
EVENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Replacement:
    total_s: float  # kill -> replacement ready
    noticed_s: float  # kill -> POD_DIED
    backoff_s: float  # planned restart delay, from the POD_DIED detail
    spawn_s: float  # POD_DIED -> POD_STARTED
    ready_s: float  # POD_STARTED -> POD_READY

    @property
    def beyond_backoff_s(self) -> float:
        """What the machinery itself costs: kill -> ready less the planned back-off."""
        return self.total_s - self.backoff_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--workload", default="api")
    parser.add_argument("--services", type=Path, default=DEMO)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # Not under pytest's 0700 tmp: the demo's Postgres drops root and must reach its data.
    work_dir = Path(tempfile.mkdtemp(prefix="bench-pod-kill-"))
    work_dir.chmod(0o755)
    events: queue.SimpleQueue[TargetEvent] = queue.SimpleQueue()
    try:
        started = time.perf_counter()
        with LocalTarget.from_file(args.services, work_dir=work_dir) as target:
            print(f"{target!r} started in {time.perf_counter() - started:.1f} s")
            target.subscribe(events.put)
            rng = random.Random(args.seed)
            results = [_kill_once(target, args.workload, events, rng) for _ in range(args.kills)]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    _print(results, args.workload)
    return 0 if statistics.median(r.total_s for r in results) <= GOAL_S else 1


def _kill_once(
    target: LocalTarget, workload: str, events: queue.SimpleQueue[TargetEvent], rng: random.Random
) -> Replacement:
    target.wait_ready(workload, timeout=EVENT_TIMEOUT_S)
    _drain(events)
    victim = rng.choice([p for p in target.pods(f"app={workload}") if p.ready])
    killed_at = time.time()
    target.kill_pod(victim, sig=signal.SIGKILL)
    died = _next(events, EventKind.POD_DIED, lambda e: e.pod == victim.name)
    born = _next(events, EventKind.POD_STARTED, lambda e: e.workload == workload)
    ready = _next(events, EventKind.POD_READY, lambda e: e.pod == born.pod)
    backoff = re.search(r"restarting in ([0-9.]+)s", died.detail or "")
    return Replacement(
        total_s=ready.at - killed_at,
        noticed_s=died.at - killed_at,
        backoff_s=float(backoff.group(1)) if backoff else 0.0,  # killed pods: no back-off
        spawn_s=born.at - died.at,
        ready_s=ready.at - born.at,
    )


def _next(events: queue.SimpleQueue[TargetEvent], kind: EventKind, match) -> TargetEvent:
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"no {kind} event within {EVENT_TIMEOUT_S:g} s")
        event = events.get(timeout=left)
        if event.kind == kind and match(event):
            return event


def _drain(events: queue.SimpleQueue[TargetEvent]) -> None:
    while not events.empty():
        events.get_nowait()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def _print(results: list[Replacement], workload: str) -> None:
    print(f"\n{len(results)} SIGKILLs of one {workload} pod; seconds from the kill:")
    print(f"{'stage':<32}{'median':>9}{'p95':>9}{'max':>9}")
    for label, attr in (
        ("kill -> replacement ready", "total_s"),
        ("  the same less the back-off", "beyond_backoff_s"),
        ("  kill -> POD_DIED (noticed)", "noticed_s"),
        ("  planned back-off", "backoff_s"),
        ("  POD_DIED -> POD_STARTED", "spawn_s"),
        ("  POD_STARTED -> POD_READY", "ready_s"),
    ):
        values = [getattr(r, attr) for r in results]
        print(
            f"{label:<32}{statistics.median(values):>9.3f}"
            f"{_percentile(values, 95):>9.3f}{max(values):>9.3f}"
        )
    print("planned back-off per kill (s): " + " ".join(f"{r.backoff_s:g}" for r in results))
    median = statistics.median(r.total_s for r in results)
    verdict = "meets" if median <= GOAL_S else "MISSES"
    print(f"\nmedian kill -> ready {median:.3f} s {verdict} the goal of <= {GOAL_S:g} s")


if __name__ == "__main__":
    sys.exit(main())
