"""Flake budget of the main job: README command (a), N times, in a fresh clone and venv.

A scenario that passes by 1 % on a quiet laptop fails on a loaded CI runner. This runs
the README's own command (a) verbatim, as a new user would (fresh clone of HEAD, fresh
venv with ``pip install -e .`` only), optionally with one core kept busy by a hog process
(a shared 2-core runner), and prints per scenario its pass rate, and per SLO the smallest
margin seen between its worst value and its bound: ``(bound - worst) / bound`` for an
upper bound, ``(worst - bound) / (1 - bound)`` for availability (the error budget left).
Goal: every run green with ``--cpu-hog``, every held SLO's margin >= 20 %.

An SLO the scenario expects to breach (``assert_recovers``) shows ``breached`` and the
latest recovery seen (``back by T0+N s``), to read against the scenario's ``within_s``.

    python benchmarks/bench_flake.py --runs 5 --cpu-hog

``--baseline REF`` also installs REF (a commit, e.g. the one before a speed-up) in its own
clone and venv and alternates the runs (baseline, HEAD, baseline, ...), so the machine's
noise falls on both alike; the main job's time is printed as the median of each and their
ratio. The tally above is HEAD's only.

    python benchmarks/bench_flake.py --runs 2 --baseline 1b83c5d
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BOUND = re.compile(r"(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*(%|ms|s)?")


@dataclass
class Tally:
    runs: int = 0
    passed: int = 0
    seconds: list[float] = field(default_factory=list)
    #: SLO name -> smallest margin seen (None: breached by design in some run)
    margins: dict[str, float | None] = field(default_factory=dict)
    #: SLO name -> latest recovery seen, seconds from T0, for SLOs that breached
    recovered: dict[str, float] = field(default_factory=dict)


def readme_command_a() -> str:
    """The pytest part of README command (a), exactly as the README prints it."""
    text = (REPO / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "pytest -m chaos" in ln and "&&" in ln)
    return line.split("&&", 1)[1].strip()


def margin(objective: str, worst: float | None) -> float | None:
    """How far ``worst`` stayed from the bound in ``objective`` (its describe() text)."""
    found = _BOUND.search(objective)
    if found is None or worst is None:
        return None
    op, number, unit = found.groups()
    bound = float(number) / (100 if unit == "%" else 1)
    if op.startswith("<"):
        return (bound - worst) / bound if bound else None
    return (worst - bound) / (1 - bound) if bound < 1 else None


def fresh_install(workdir: Path, ref: str | None = None) -> tuple[Path, Path]:
    """A clone of HEAD (or ``ref``) and a venv with only ``pip install -e .``, as a new
    user has."""
    project, venv = workdir / "project", workdir / "venv"
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    if ref:
        subprocess.run(["git", "-C", str(project), "checkout", "-q", ref], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-e", str(project)], check=True, capture_output=True)
    return project, venv


def hog() -> None:
    while True:
        pass


def run_once(project: Path, venv: Path, command: str, index: int) -> tuple[int, float, dict]:
    argv = shlex.split(command)
    argv[0] = str(venv / "bin" / "pytest")
    start = time.monotonic()
    done = subprocess.run(
        [*argv, "-p", "no:cacheprovider", "-q"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - start
    (project / f"run{index}.log").write_text(done.stdout + done.stderr)
    report = project / "reports" / "resilience.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    if (project / "reports").exists():
        (project / "reports").rename(project / f"reports-run{index}")
    return done.returncode, took, data


def tally(data: dict, totals: dict[str, Tally]) -> None:
    for scenario in data.get("scenarios", ()):
        row = totals[scenario["nodeid"]]
        row.runs += 1
        row.passed += scenario["outcome"] == "passed"
        row.seconds.append(float(scenario.get("duration_s") or 0))
        for verdict in scenario.get("slo_verdicts", ()):
            seen = margin(verdict["objective"], verdict.get("worst_value"))
            name = verdict["name"]
            if not verdict.get("held"):
                seen = None
                back = verdict.get("recovered_within_s")
                if back is not None:
                    row.recovered[name] = max(row.recovered.get(name, 0.0), float(back))
            if name not in row.margins:
                row.margins[name] = seen
            elif row.margins[name] is not None:
                row.margins[name] = None if seen is None else min(row.margins[name], seen)


def print_table(totals: dict[str, Tally], runs: list[tuple[int, float]]) -> None:
    print(f"\nruns: {', '.join(f'exit {rc} in {s:.0f} s' for rc, s in runs)}")
    print(f"{'scenario':<78} {'pass':>5} {'max s':>6}  SLO margins (smallest)")
    for nodeid, row in sorted(totals.items()):
        slos = ", ".join(
            _shown(name, m, row.recovered.get(name)) for name, m in row.margins.items()
        )
        slowest = max(row.seconds, default=0.0)
        print(f"{nodeid[-78:]:<78} {row.passed}/{row.runs:<3} {slowest:>6.0f}  {slos}")
    held = [m for row in totals.values() for m in row.margins.values() if m is not None]
    green = sum(rc == 0 for rc, _ in runs)
    print(f"\n{green}/{len(runs)} runs green; smallest held-SLO margin {min(held, default=0):.0%}")


def _shown(name: str, held_margin: float | None, back: float | None) -> str:
    if held_margin is not None:
        return f"{name} {held_margin:.0%}"
    return f"{name} breached" + ("" if back is None else f" (back by T0+{back:.0f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cpu-hog", action="store_true", help="keep one core busy meanwhile")
    parser.add_argument("--workdir", type=Path, help="keep the clone here (default: a temp dir)")
    parser.add_argument("--baseline", metavar="REF", help="also time REF, runs alternated")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-flake-"))
    command = readme_command_a()
    print(f"README command (a): {command}\nfresh clone and venv in {workdir} ...", flush=True)
    project, venv = fresh_install(workdir)
    base = fresh_install(workdir / "baseline", args.baseline) if args.baseline else None
    base_times: list[float] = []
    burner = multiprocessing.Process(target=hog, daemon=True) if args.cpu_hog else None
    if burner:
        burner.start()
    totals: dict[str, Tally] = defaultdict(Tally)
    runs: list[tuple[int, float]] = []
    try:
        for index in range(args.runs):
            if base is not None:
                base_rc, base_took, _ = run_once(*base, command, index)
                base_times.append(base_took)
                print(
                    f"baseline {args.baseline} run {index + 1}: exit {base_rc} in {base_took:.0f} s"
                )
            rc, took, data = run_once(project, venv, command, index)
            runs.append((rc, took))
            tally(data, totals)
            print(f"run {index + 1}/{args.runs}: exit {rc} in {took:.0f} s", flush=True)
    finally:
        if burner:
            burner.terminate()
    print_table(totals, runs)
    if base_times:
        head, then = statistics.median(t for _, t in runs), statistics.median(base_times)
        print(
            f"main job time: HEAD median {head:.0f} s, {args.baseline} median {then:.0f} s, "
            f"ratio {head / then:.2f}"
        )
    print(f"logs and reports: {project}/run*.log, {project}/reports-run*/")
    return 0 if all(rc == 0 for rc, _ in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
