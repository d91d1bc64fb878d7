"""The README's examples in a project of the user's own, outside this repository.

The scenarios are cut from README.md itself (its first ``python`` and ``yaml`` blocks),
so the README cannot drift from what passes. The project has its own ``scenarios/`` and
no ``remediators/``, ``pyproject.toml`` or anything else copied from this repo: the
bundled demo, playbooks and load script must come from the installed package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from test_e2e_scenarios import run_pytest

README = Path(__file__).resolve().parents[2] / "README.md"

ENGINE_AND_PROMQL = """
import pytest


@pytest.mark.chaos
def test_steady_state_through_promql_with_the_engine_watching(load, slo, remediation_engine):
    slo.promql("error_rate", below=0.01, window_s=5)  # the README's PromQL form
    with load(users=5, spawn_rate=5) as run:
        run.wait_for_samples(3, timeout=30)
        slo.assert_holds()
    remediation_engine.assert_no_page()
    assert {"High Error Rate", "Pod Crash Loop"} <= {b.name for b in remediation_engine.playbooks}
"""


def readme_block(language: str) -> str:
    """The first fenced block of ``language`` in README.md."""
    found = re.search(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)
    assert found, f"README.md has no {language} block"
    return found.group(1)


def test_the_readme_examples_pass_in_a_project_of_ones_own(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        reason = "PromQL SLOs need Debian's prometheus (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)
    project = tmp_path / "shop"
    (project / "scenarios").mkdir(parents=True)
    (project / "scenarios" / "test_from_readme.py").write_text(readme_block("python"))
    (project / "scenarios" / "kill_api.yaml").write_text(readme_block("yaml"))
    (project / "scenarios" / "test_engine.py").write_text(ENGINE_AND_PROMQL)
    report = project / "reports" / "resilience.html"

    session = run_pytest(project, "-m", "chaos", "scenarios/", f"--resilience-report={report}")

    assert session.returncode == 0, session.output
    assert "3 passed" in session.output, session.output
    # Nothing from this package's configuration: no config warning, no warning of ours.
    # (pytest-asyncio, installed here by the test extra, warns about its own unset option
    # in any project that does not configure it; a user without the extra never sees it.)
    ours = [
        line
        for line in session.output.splitlines()
        if "Warning" in line and ("PytestConfigWarning" in line or "pytest_resilience" in line)
    ]
    assert not ours, session.output
    data = json.loads(report.with_suffix(".json").read_text())
    assert len(data["scenarios"]) == 3
    assert not (project / "remediators").exists()  # nothing was planted in the project
