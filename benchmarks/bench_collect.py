"""What installing pytest-resilience costs every other test suite: `pytest --collect-only`.

    python benchmarks/bench_collect.py [--runs 20]

Runs ``python -m pytest --collect-only -q`` in an empty project ``--runs`` times with the
plugin disabled (``-p no:resilience``) and as many times with it, alternating so machine
load hits both alike, and prints the medians and their difference: the time the plugin
adds at startup. Then lists the plugin's heaviest imports (``-X importtime``), which is
where that time goes.
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

COMMAND = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    project = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    try:
        (project / "pytest.ini").write_text("[pytest]\n")  # own rootdir, no outer config
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        _run(project, env, [])  # warm the page cache once, unmeasured
        without, with_plugin = [], []
        for _ in range(args.runs):
            without.append(_run(project, env, ["-p", "no:resilience"]))
            with_plugin.append(_run(project, env, []))
        heaviest, imports_ms = _heaviest_imports(project, env)
    finally:
        shutil.rmtree(project, ignore_errors=True)

    base, plugin = statistics.median(without), statistics.median(with_plugin)
    print(f"pytest --collect-only on an empty project, {args.runs} runs each, alternating")
    print(f"  without the plugin (-p no:resilience): median {base * 1000:7.1f} ms")
    print(f"  with the plugin:                       median {plugin * 1000:7.1f} ms")
    print(f"  added by the plugin:                   {(plugin - base) * 1000:+7.1f} ms ", end="")
    print(f"({plugin / base:.3f}x)")
    print(f"imports of pytest_resilience modules: {imports_ms:.1f} ms in all; heaviest (ms):")
    for name, ms in heaviest:
        print(f"  {ms:7.1f}  {name}")
    return 0


def _run(project: Path, env: dict[str, str], extra: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run([*COMMAND, *extra], cwd=project, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 5):  # 5: no tests collected, as expected
        raise SystemExit(f"{' '.join(COMMAND + extra)} failed:\n{proc.stdout.decode()}")
    return elapsed


def _heaviest_imports(
    project: Path, env: dict[str, str], top: int = 8
) -> tuple[list[tuple[str, float]], float]:
    """The package's imports by cumulative time (``-X importtime``), and their total."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *COMMAND[1:]],
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
