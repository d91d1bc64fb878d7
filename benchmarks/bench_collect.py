"""What installing pytest-resilience costs every other test suite: `pytest --collect-only`.

    python benchmarks/bench_collect.py [--runs 20] [--venv] [--baseline COMMIT] [--no-bytecode]

Runs ``python -m pytest --collect-only -q`` in an empty project ``--runs`` times with the
plugin disabled (``-p no:resilience``) and as many times with it, alternating so machine
load hits both alike, and prints the medians, their difference and their ratio: what the
plugin adds at startup. Then lists the plugin's heaviest imports (``-X importtime``), which
is where that time goes.

``--venv`` measures in a fresh virtual environment with only the runtime dependencies
(``pip install .``, no test extra), as a user's suite meets the plugin; otherwise this
interpreter. ``--baseline COMMIT`` measures that commit's package too, in the same
alternation: its ``src/`` (``git archive``) goes first on ``PYTHONPATH``, so the installed
entry point loads the baseline's plugin against the same dependencies. The before/after
table then compares the two ratios, each against its own ``-p no:resilience`` run.

Bytecode caching is on, as on a user's machine: pytest rewrites the asserts of every
plugin module it loads from an entry point and caches the result beside the module's own
pyc. ``--no-bytecode`` (``PYTHONDONTWRITEBYTECODE=1``, as some CI images set) measures
the cold case, where that rewrite is paid on every run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
REPO = Path(__file__).resolve().parents[1]
#: this shell's settings that would change what is measured
_OUTER = ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--venv", action="store_true", help="runtime dependencies only")
    parser.add_argument("--baseline", metavar="COMMIT", help="also measure this commit")
    parser.add_argument("--no-bytecode", action="store_true", help="PYTHONDONTWRITEBYTECODE=1")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    try:
        project = work / "project"
        project.mkdir()
        (project / "pytest.ini").write_text("[pytest]\n")  # own rootdir, no outer config
        python = _venv_python(work) if args.venv else sys.executable
        env = {k: v for k, v in os.environ.items() if k not in _OUTER}
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        variants = {"this tree": env}
        if args.baseline:
            variants[args.baseline] = {**env, "PYTHONPATH": str(_baseline_src(work, args.baseline))}
        times: dict[tuple[str, bool], list[float]] = {}
        for variant_env in variants.values():  # warm the page cache once, unmeasured
            _run(python, project, variant_env, [])
        for _ in range(args.runs):
            for name, variant_env in variants.items():
                for plugin in (False, True):
                    extra = [] if plugin else ["-p", "no:resilience"]
                    times.setdefault((name, plugin), []).append(
                        _run(python, project, variant_env, extra)
                    )
        heaviest, imports_ms = _heaviest_imports(python, project, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    where = "a venv with the runtime dependencies only" if args.venv else sys.executable
    print(f"pytest --collect-only on an empty project, {args.runs} runs each, alternating;")
    bytecode = "off (PYTHONDONTWRITEBYTECODE=1)" if args.no_bytecode else "cached"
    print(f"python: {where}; bytecode {bytecode}")
    print(
        f"  {'package':<14} {'without (ms)':>13} {'with (ms)':>10} {'added (ms)':>11} {'ratio':>7}"
    )
    for name in variants:
        base = statistics.median(times[(name, False)])
        plugin = statistics.median(times[(name, True)])
        print(
            f"  {name:<14} {base * 1000:13.1f} {plugin * 1000:10.1f} "
            f"{(plugin - base) * 1000:+11.1f} {plugin / base:6.3f}x"
        )
    print(f"imports of pytest_resilience modules: {imports_ms:.1f} ms in all; heaviest (ms):")
    for name, ms in heaviest:
        print(f"  {ms:7.1f}  {name}")
    return 0


def _venv_python(work: Path) -> str:
    """A fresh venv holding this tree's package and its runtime dependencies, nothing else."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", str(REPO)], check=True)
    return python


def _baseline_src(work: Path, commit: str) -> Path:
    """The commit's ``src/`` tree, unpacked (its package on PYTHONPATH shadows the installed)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], capture_output=True, check=True
    )
    target = work / "baseline"
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def _run(python: str, project: Path, env: dict[str, str], extra: list[str]) -> float:
    started = time.perf_counter()
    command = [python, *COMMAND, *extra]
    proc = subprocess.run(command, cwd=project, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 5):  # 5: no tests collected, as expected
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout.decode()}")
    return elapsed


def _heaviest_imports(
    python: str, project: Path, env: dict[str, str], top: int = 8
) -> tuple[list[tuple[str, float]], float]:
    """The package's imports by cumulative time (``-X importtime``), and their total."""
    proc = subprocess.run(
        [python, "-X", "importtime", *COMMAND],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    rows, total = [], 0.0
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and match.group(4).startswith("pytest_resilience"):
            rows.append((match.group(4), int(match.group(2)) / 1000))
            total += int(match.group(1)) / 1000  # self time: no double counting
    return sorted(rows, key=lambda row: row[1], reverse=True)[:top], total


if __name__ == "__main__":
    sys.exit(main())
