"""An experiment under our load, judged by our SLOs: the ``pytest-resilience`` extension.

tests/chaostoolkit/load_slo.json opts in through its ``extensions`` entry (chaoslib keeps
any extension with a name). The item runs Locust against two replicas of a tiny HTTP pod
while the method terminates one of them natively; its SLOs hold before the method and
recover after it, and the journal, the timeline and the resilience report carry them as
they carry a YAML scenario's.
"""

from __future__ import annotations

import json

import pytest
from test_chaostoolkit_native import _add, _port, _run
from test_chaostoolkit_native import project as project


def test_slos_hold_under_load_and_reach_the_report(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTK_TEST_PORT", str(_port(project)))
    _add(project, "load_slo.json")

    result = _run(project, "--chaostoolkit-native", "--resilience-report=report.html", "-rA")

    result.assert_outcomes(passed=1)
    (scenario,) = json.loads((project.path / "report.json").read_text())["scenarios"]
    assert [v["name"] for v in scenario["slo_verdicts"]] == ["error_rate", "availability"]
    events = scenario["timeline"]["events"]
    kinds = [e["kind"] for e in events]
    # the load ran around the whole experiment, the kill was a ledgered fault within it
    assert kinds.index("load_started") < kinds.index("experiment_started")
    assert kinds.index("fault_injected") < kinds.index("experiment_ended")
    judged = [
        (e["detail"]["phase"], e["name"], e["detail"]["tolerance_met"])
        for e in events
        if e["kind"] == "experiment_activity" and e["detail"].get("type") == "slo"
    ]
    assert judged == [
        ("hypothesis-before", "SLOs hold: error_rate, availability", True),
        ("hypothesis-after", "SLOs recover within 30 s", True),
    ]


def test_an_slo_that_does_not_hold_fails_the_steady_state_and_names_it(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTK_TEST_PORT", str(_port(project)))

    def change(data: dict) -> None:  # nothing answers in under a microsecond
        data["extensions"][0]["slo"].append({"latency": {"percentile": 50, "below_ms": 0.001}})

    _add(project, "load_slo.json", change)

    result = _run(project, "--chaostoolkit-native")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*experiment 'One replica down, users do not notice' ended failed",
            "*hypothesis-before slo 'SLOs hold: error_rate, availability, p50_latency': failed*",
        ]
    )
    assert "terminate-one-replica" not in result.stdout.str()  # the method never ran


def test_a_malformed_extension_names_its_json_path(project: pytest.Pytester) -> None:
    def change(data: dict) -> None:
        data["extensions"][0]["slo"][0] = {"error_budget": {"below": 1}}

    _add(project, "load_slo.json", change)

    result = _run(project, "--collect-only")

    result.stdout.fnmatch_lines(
        ["*load_slo.json:*extensions[[]0].slo[[]0]*unknown SLO 'error_budget'*"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_extensions_need_a_name_as_chaoslib_says(project: pytest.Pytester) -> None:
    def change(data: dict) -> None:
        data["extensions"].append({"load": {}})

    _add(project, "load_slo.json", change)

    result = _run(project, "--collect-only")

    result.stdout.fnmatch_lines(["*extensions[[]1].name*All extensions require a non-empty name*"])


def test_a_dry_run_starts_no_load(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTK_TEST_PORT", "1")  # nothing listens there: any probe would fail
    _add(project, "load_slo.json")

    result = _run(project, "--chaostoolkit-native", "--chaos-dry-run", "-rA")

    result.assert_outcomes(passed=1)
    assert not (project.path / "ledger.sqlite").exists() or _no_entries(project)


def _no_entries(project: pytest.Pytester) -> bool:
    from test_chaostoolkit_native import _entries

    return _entries(project) == []
