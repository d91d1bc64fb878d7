"""Each target class is a :class:`~pytest_resilience.targets.base.Target` to ``mypy --strict``:
the protocol says what the targets really take and return (issue 14: ``drain`` returned
None in the protocol and the evicted pods on Kubernetes).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
CONFIG = REPO / "pyproject.toml"  # [tool.mypy]
CACHE = Path(tempfile.gettempdir()) / "pytest-resilience-mypy-cache"  # test_typing's

TARGETS = {
    "pytest_resilience.targets.kubernetes": "KubernetesTarget",
    "pytest_resilience.targets.local": "LocalTarget",
}


def test_every_target_class_satisfies_the_target_protocol(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    lines = ["from pytest_resilience.targets.base import Target"]
    for module, cls in TARGETS.items():
        lines += [
            f"from {module} import {cls}",
            f"def _as_target_{cls}(t: {cls}) -> Target:",
            "    return t",
        ]
    check = tmp_path / "conformance.py"
    check.write_text("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--cache-dir", str(CACHE)]
    argv += ["--follow-imports=silent", "--no-error-summary", str(check)]
    done = subprocess.run(argv, cwd=SRC, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
