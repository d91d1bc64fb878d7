"""A YAML scenario's ``expect:``: what the remediation engine must have done.

Without it, a scenario whose fault the scenario itself reverts passes whether or not the
engine healed anything. The block's mistakes name file, line and field; a real run on the
local target (tests/e2e_projects/baseline: a tiny HTTP service, Locust, the High Error
Rate playbook narrowed to it, a bad release) passes when the engine did what ``expect:``
says and fails, naming what was expected and what was seen, when it names an action the
engine did not take. The two scenarios run in one pytest session (about 45 s on 2 cores).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_resilience.errors import ConfigError
from pytest_resilience.scenario import Expectation, load_scenario

PROJECT = Path(__file__).parents[1] / "e2e_projects" / "baseline"

SCENARIO = """\
title: {title}
remediation: {remediation}
load: {{users: 4, spawn_rate: 4, locustfile: "{project}/locustfile.py"}}
steady-state-hypothesis:
  duration_s: 2
  slos:
    - error_rate: {{below: 0.01, window_s: 2}}
method:
  - fault: bad_deploy
    args: {{workload: web, version: v2}}
    duration_s: 10
recovery:
  within_s: 15
expect:
{expect}"""


def _write(path: Path, expect: str, *, remediation: str = "true", project: str = ".") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        SCENARIO.format(title=path.stem, remediation=remediation, project=project, expect=expect)
    )
    return path


def _error(tmp_path: Path, expect: str, **options: str) -> ConfigError:
    path = _write(tmp_path / "scenarios" / "bad.yaml", expect, **options)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    return caught.value


# -- the block's mistakes ----------------------------------------------------------------


def test_the_block_is_read_into_an_expectation(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ok.yaml",
        "  alert: ErrorRateHighCritical\n  strategy: High Error Rate\n"
        "  actions: [rollback]\n  no_page: true\n",
    )
    scenario = load_scenario(path)
    assert scenario.expect == Expectation(
        alert="ErrorRateHighCritical",
        strategy="High Error Rate",
        actions=("rollback",),
        no_page=True,
    )
    assert scenario.expect.where["actions"] == f"{path}:17"


def test_an_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    error = _error(tmp_path, "  alert: ErrorRateHighCritical\n  strategie: High Error Rate\n")
    assert (error.field, error.line) == ("expect.strategie", 16)
    assert str(error).startswith(f"{tmp_path / 'scenarios' / 'bad.yaml'}:16, ")
    assert "unknown key 'strategie' in expect" in str(error)
    assert "['alert', 'strategy', 'actions', 'no_page']" in str(error)


@pytest.mark.parametrize(
    ("expect", "field", "line", "says"),
    [
        ("  strategy: High Error Rate\n  actions: rollback\n", "expect.actions", 16,
         "must be list, got 'rollback'"),
        ("  no_page: yes please\n", "expect.no_page", 15, "must be bool, got 'yes please'"),
        ("  alert: [ErrorRateHighCritical]\n", "expect.alert", 15, "must be str"),
        ("  strategy: High Error Rate\n  actions: [rollback, 3]\n", "expect.actions[1]", 16,
         "an action is a name (e.g. rollback), got 3"),
        ("  actions: [rollback]\n", "expect.actions", 15, "name it in expect.strategy"),
        ("  strategy: ''\n", "expect.strategy", 15, "must name the strategy"),
    ],
)  # fmt: skip
def test_a_wrong_type_names_file_line_and_field(
    tmp_path: Path, expect: str, field: str, line: int, says: str
) -> None:
    error = _error(tmp_path, expect)
    assert (error.field, error.line) == (field, line), str(error)
    assert f"bad.yaml:{line}, field {field!r}: " in str(error) and says in str(error)


def test_expect_without_remediation_names_file_line_and_field(tmp_path: Path) -> None:
    error = _error(tmp_path, "  alert: ErrorRateHighCritical\n", remediation="false")
    assert (error.field, error.line) == ("expect", 15)
    assert "set remediation: true" in str(error) and "bad.yaml:15" in str(error)


def test_a_scenario_without_expect_expects_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(SCENARIO.format(title="t", remediation="false", project=".", expect="")
                    .replace("expect:\n", ""))  # fmt: skip
    assert load_scenario(path).expect is None


# -- a real run on the local target -------------------------------------------------------


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both scenarios run in one pytest session against the project's tiny service."""
    project = tmp_path_factory.mktemp("expect") / "project"
    shutil.copytree(PROJECT, project)
    shutil.rmtree(project / "scenarios")  # its own scenario is the baseline's
    file = project / "services.yaml"
    file.write_text(file.read_text().replace("@HERE@", str(project)))
    _write(
        project / "scenarios" / "held.yaml",
        "  alert: ErrorRateHighCritical\n  strategy: High Error Rate\n"
        "  actions: [rollback]\n  no_page: true\n",
        project=str(project),
    )
    _write(
        project / "scenarios" / "not_taken.yaml",
        "  alert: ErrorRateHighCritical\n  strategy: High Error Rate\n  actions: [restart_pod]\n",
        project=str(project),
    )
    out = project / "out"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "scenarios/",
            f"--resilience-report={out / 'resilience.html'}",
            f"--chaos-ledger={project / 'ledger.sqlite'}",
        ],
        cwd=project, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = done.stdout[-12000:] + done.stderr[-2000:]
    assert (out / "resilience.json").exists(), output
    report = json.loads((out / "resilience.json").read_text())
    return {
        "returncode": done.returncode,
        "output": output,
        "project": project,
        "scenarios": {s["nodeid"]: s for s in report["scenarios"]},
    }


def test_expect_that_holds_passes(session: dict[str, Any]) -> None:
    held = session["scenarios"]["scenarios/held.yaml::held"]
    assert held["outcome"] == "passed", session["output"]
    events = [(e["kind"], e.get("name")) for e in held["timeline"]["events"]]
    assert ("alert_fired", "ErrorRateHighCritical") in events, events
    assert ("action_started", "rollback") in events, events


def test_an_action_the_engine_did_not_take_fails_saying_expected_and_seen(
    session: dict[str, Any],
) -> None:
    out = session["output"]
    assert session["returncode"] == pytest.ExitCode.TESTS_FAILED, out
    not_taken = session["scenarios"]["scenarios/not_taken.yaml::not_taken"]
    assert not_taken["outcome"] == "failed", out
    path = session["project"] / "scenarios" / "not_taken.yaml"
    assert re.search(
        re.escape(f"{path}:17, field 'expect.actions': expected strategy 'High Error Rate' "
                  "to run ['restart_pod'] and fix it; seen: 'High Error Rate' step "
                  "'roll back the release' ran ['rollback'], fixed"),
        out,
    ), out  # fmt: skip
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
