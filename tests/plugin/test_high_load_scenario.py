"""The high-load scenarios' own parts: the YAML twin's keys, what they need, their errors.

The scenarios themselves run in the main job (``pytest -m chaos scenarios/``) on the local
target, and on the emulator's process kubelet in tests/kubernetes/test_kube_scenarios.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import pytest_resilience.collect  # noqa: F401 - kept loaded across pytester's inline run
from pytest_resilience.capabilities import missing, required
from pytest_resilience.errors import ConfigError
from pytest_resilience.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "scenarios" / "high_load_autoscaling.yaml"
PYTHON = REPO / "scenarios" / "test_high_load.py"
HPA = REPO / "deploy" / "k8s" / "autoscaling" / "api-hpa.yaml"


def test_the_yaml_twin_reads_its_autoscaler_paced_load_and_surge():
    scenario = load_scenario(TWIN)
    assert scenario.autoscaler is not None
    assert (scenario.autoscaler.workload, scenario.autoscaler.max_replicas) == ("api", 6)
    assert scenario.load == {"rps": 20}
    (surge,) = scenario.method
    assert surge.fault == "load_surge" and surge.args["rps"] == 80
    assert surge.hold_during == ("error_rate", "p95_latency")


def test_a_surge_without_an_autoscaler_and_a_missing_manifest_name_the_field(tmp_path):
    body = TWIN.read_text()
    no_hpa = tmp_path / "no_hpa.yaml"
    no_hpa.write_text(body.replace("autoscaler: ../deploy/k8s/autoscaling/api-hpa.yaml\n", ""))
    with pytest.raises(ConfigError) as info:
        load_scenario(no_hpa)
    assert info.value.field == "method" and "autoscaler" in str(info.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(body.replace("api-hpa.yaml", "api-hpa.yml"))
    with pytest.raises(ConfigError) as info:
        load_scenario(wrong)
    assert info.value.field == "autoscaler" and "api-hpa.yml" in str(info.value)


def test_both_twins_need_autoscaling_and_a_target_without_it_says_what_it_lacks(
    pytester: pytest.Pytester,
):
    scenarios = pytester.path / "scenarios"
    scenarios.mkdir()
    shutil.copy(TWIN, scenarios / TWIN.name)
    shutil.copy(PYTHON, scenarios / PYTHON.name)
    (pytester.path / "deploy" / "k8s" / "autoscaling").mkdir(parents=True)
    shutil.copy(HPA, pytester.path / "deploy" / "k8s" / "autoscaling" / HPA.name)
    items, _ = pytester.inline_genitems(str(scenarios), "-p", "no:cacheprovider")
    assert sorted(item.name for item in items) == [
        "high_load_autoscaling",
        "test_api_scales_out_under_high_load_and_latency_stays_acceptable",
    ]
    assert {item.name: "autoscaling" in required(item) for item in items} == dict.fromkeys(
        (item.name for item in items), True
    )

    class Bare:  # a target class with none of the capabilities
        pass

    assert "HorizontalPodAutoscaler" in missing(Bare)["autoscaling"]
