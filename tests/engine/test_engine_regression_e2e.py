"""An incident of the main job becomes a regression scenario that is collected and passes.

The main job's crash-loop scenario (scenarios/test_remediation.py) runs for real in a
subprocess against the local demo, its engine store kept (``--basetemp``); the incident it
opened is turned into a YAML scenario by ``python -m pytest_resilience.engine scenario``;
that file is collected and run by a second pytest session against the demo, and must pass
with the incident's fault, target and bounds, raising the same alert again (its
``expect:`` says so). The same file with its cause taken out (one kill, no crash loop)
still recovers, and fails on that ``expect:``.
About 55 s for the first run, 45 s for the replay, 35 s for the miss on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pytest_resilience.engine.regression import recovery_bound
from pytest_resilience.engine.store import Store
from pytest_resilience.scenario import Expectation, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "scenarios/test_remediation.py::test_crash_loop_gets_a_fresh_restart"


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )


@pytest.fixture(scope="module")
def incident(tmp_path_factory) -> dict:
    """The main job's crash-loop scenario, run for real; its store and the incident."""
    out = tmp_path_factory.mktemp("incident")
    done = _pytest(
        ROOT, "-m", "chaos", SOURCE, f"--basetemp={out / 'run'}",
        f"--chaos-ledger={out / 'ledger.sqlite'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    # tmp_path's directory, and pytest's "...current" link to it
    stores = sorted({p.resolve() for p in (out / "run").glob("*/engine.db")})
    assert len(stores) == 1, stores
    (path,) = stores
    store = Store(path)
    try:
        (found,) = [i for i in store.incidents() if i.alert_name == "PodCrashLoop"]
    finally:
        store.close()
    assert found.status == "resolved", found.reason
    return {"store": path, "incident": found, "project": out / "project"}


def _generate(incident: dict) -> Path:
    out = incident["project"] / "scenarios" / f"regression_{incident['incident'].id}.yaml"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest_resilience.engine", "scenario",
            "--store", str(incident["store"]), incident["incident"].id, "-o", str(out),
            "--force",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_the_scenario_carries_the_incidents_fault_target_and_bounds(incident):
    found = incident["incident"]
    path = _generate(incident)
    scenario = load_scenario(path)
    # the crash loop's deaths (the alert's value), one replacement after another, on its workload
    assert found.target == "api" and found.alert.value == 3.0
    assert [(s.fault, s.args["selector"]) for s in scenario.method] == [("pod_kill", "app=api")] * 3
    assert scenario.remediation
    took = round(found.closed_at - found.alert.starts_at, 1)
    assert scenario.recover_within_s == recovery_bound(took) >= 2 * took
    assert {o.signal for o in scenario.slos} == {"error_rate", "latency"}
    # the replay must be the incident again: its alert, the step that healed it, no page
    assert scenario.expect == Expectation(
        alert="PodCrashLoop", strategy="Pod Crash Loop", actions=("restart_pod",), no_page=True
    )
    header = path.read_text().split("\ntitle:")[0]
    assert f"incident {found.id}: PodCrashLoop on api" in header
    assert "python -m pytest_resilience.engine scenario --store" in header


def test_the_written_scenario_is_collected_and_passes_against_the_demo(incident):
    path = _generate(incident)
    project = incident["project"]
    listed = _pytest(project, "--collect-only", "-m", "chaos", "scenarios/")
    assert f"{path.name}::{path.stem}" in listed.stdout, listed.stdout + listed.stderr
    done = _pytest(
        project, "-m", "chaos", "scenarios/", f"--basetemp={project / 'run'}",
        f"--chaos-ledger={project / 'ledger.sqlite'}",
        f"--resilience-report={project / 'resilience.html'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    (result,) = json.loads((project / "resilience.json").read_text())["scenarios"]
    assert result["outcome"] == "passed"
    events = [(e["kind"], e.get("name")) for e in result["timeline"]["events"]]
    assert events.count(("fault_injected", "pod_kill")) == 3
    # the replay is the incident again: the same alert, the same playbook's action
    assert ("alert_fired", "PodCrashLoop") in events, events
    assert ("action_started", "restart_pod") in events, events
    assert result["figures"]["time_to_recover"] <= load_scenario(path).recover_within_s


def test_a_replay_that_misses_the_cause_fails_on_its_expect(incident):
    """One kill instead of the loop: a replica is replaced and the SLOs recover, as they
    would after any fault the scenario reverts, but PodCrashLoop never fires: before
    ``expect:`` such a replay passed and proved nothing."""
    generated = yaml.safe_load(_generate(incident).read_text())
    generated["method"] = generated["method"][:1]
    project = incident["project"].parent / "missed"
    path = project / "scenarios" / "missed.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(generated, sort_keys=False))
    done = _pytest(
        project, "-m", "chaos", "scenarios/", f"--basetemp={project / 'run'}",
        f"--chaos-ledger={project / 'ledger.sqlite'}",
    )  # fmt: skip
    out = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert f"{path}:" in out and "field 'expect.alert': expected alert 'PodCrashLoop' to " in out
    assert "fire after T0; seen: fired:" in out, out  # after the SLOs' checks, which held
