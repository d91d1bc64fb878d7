"""The remediation scenarios run end to end, judged by the resilience report they write.

One pytest run of scenarios/test_remediation.py in a subprocess (a real session: the
local demo target, Locust, the engine, the faults), then assertions on the JSON twin of
the report: what a reviewer would read. About four minutes on a 2-core machine; the
scenarios' own durations are the playbooks' verify windows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: scenario -> (strategy, actions of the step that healed, who mitigated first)
HEALED = {
    "test_bad_release_is_rolled_back": ("High Error Rate", ["rollback"], "engine"),
    # the platform restarts each killed replica itself; the engine's restart comes after
    "test_crash_loop_gets_a_fresh_restart": ("Pod Crash Loop", ["restart_pod"], "platform"),
    "test_crowded_out_cache_is_invalidated_and_warmed": (
        "Resource Exhaustion",
        ["invalidate_cache", "warm_cache"],
        "engine",
    ),
    "test_leaked_pool_is_reset_and_grown": (
        "Resource Exhaustion",
        ["close_idle_connections", "grow_pool"],
        "engine",
    ),
    "test_memory_hog_gc_then_scale_up_and_drain": (
        "Resource Exhaustion",
        ["scale_up", "drain_pod"],
        "engine",
    ),
    "test_failed_node_is_drained_and_replaced": (
        "Node Not Ready",
        ["drain_and_replace_node"],
        "engine",
    ),
}
PAGED = "test_leak_that_keeps_leaking_pages_once"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("remediation")
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "chaos",
            "scenarios/test_remediation.py",
            f"--resilience-report={out / 'resilience.html'}",
            f"--chaos-ledger={out / 'ledger.sqlite'}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    path = out / "resilience.json"
    assert path.exists(), f"no report written:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    data = json.loads(path.read_text())
    data["_output"] = done.stdout[-6000:]
    return data


def scenarios(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["scenarios"]}


@pytest.mark.timeout(900)
def test_every_remediation_scenario_passed(report):
    found = scenarios(report)
    assert sorted(found) == sorted([*HEALED, PAGED]), report["_output"]
    failed = {n: s["outcome"] for n, s in found.items() if s["outcome"] != "passed"}
    assert not failed, report["_output"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(HEALED))
def test_the_expected_strategy_healed_without_a_page(report, name):
    scenario = scenarios(report)[name]
    strategy, actions, healed_by = HEALED[name]
    figures = scenario["figures"]
    assert figures["healed_by"] == healed_by
    assert figures["time_to_detect"] is not None and figures["time_to_recover"] is not None
    assert figures["time_to_detect"] <= figures["time_to_recover"] or healed_by == "platform"
    ran = [a for a in scenario["actions"] if a["strategy"] == strategy]
    names = [a["action"] for a in ran]
    assert names[-len(actions) :] == actions, scenario["actions"]
    assert all(a["ok"] for a in ran[-len(actions) :])
    assert ran[-1]["verify"] == "passed"
    assert scenario["pages_sent"] == 0


@pytest.mark.timeout(900)
def test_unfixable_fault_pages_exactly_once(report):
    scenario = scenarios(report)[PAGED]
    assert scenario["pages_sent"] == 1
    escalations = [e for e in scenario["timeline"]["events"] if e["kind"] == "escalated"]
    assert [e["name"] for e in escalations] == ["DatabaseConnectionPoolExhaustion"]
    assert scenario["figures"]["time_to_detect"] is not None
    assert scenario["figures"]["time_to_recover"] is None  # a human fixes this one
    tried = [a["action"] for a in scenario["actions"]]
    assert tried == ["close_idle_connections", "grow_pool", "graceful_restart"]
    assert all(a["verify"] is None or a["verify"].startswith("failed") for a in scenario["actions"])
