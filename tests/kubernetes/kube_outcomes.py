"""A pytest plugin for the inner sessions of test_kube_scenarios.py: each test's outcome.

Loaded with ``-p kube_outcomes``; writes ``{nodeid: "passed" | "failed" | "skipped: why"}``
as JSON to the file named by ``KUBE_OUTCOMES`` (junit's classname loses the ``.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_results: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _results[report.nodeid] = f"skipped: {str(reason).removeprefix('Skipped: ')}"
    elif report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else ""
        why = f": {message} | {report.longreprtext[-3000:]}"  # the cause is in its tail
        when = "failed" if report.when == "call" else f"error ({report.when})"
        _results[report.nodeid] = when + why
    elif report.when == "call":
        _results.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("KUBE_OUTCOMES")
    if path:
        Path(path).write_text(json.dumps(_results, indent=1))
