"""``mypy --strict`` holds on the whole package, ``src/pytest_resilience``.

The configuration (strict, unreachable code, the partly typed or untyped third-party
libraries) is ``[tool.mypy]`` in pyproject.toml, so ``mypy src`` from the repo root checks
the same. Every ``# type: ignore`` names its code and says why on its line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "pytest_resilience"
CONFIG = REPO / "pyproject.toml"
#: outside the repo, kept between runs: a cold run analyses the kubernetes client too
CACHE = Path(tempfile.gettempdir()) / "pytest-resilience-mypy-cache"


def test_type_ignores_say_why() -> None:
    """A ``# type: ignore[code]`` stays only with a reason after it on the same line."""
    bare = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?\s*$")
    unexplained = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line) or re.search(r"#\s*type:\s*ignore(?!\[)", line)
    ]
    assert unexplained == []


def test_mypy_strict_is_clean_on_the_package() -> None:
    pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    argv = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--cache-dir", str(CACHE)]
    argv += ["--no-error-summary", "--hide-error-context", str(PACKAGE)]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
