"""The plugin as users meet it: options, marker, YAML collection and their errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD_SCENARIO = """
title: Kill one API replica
load: {users: 5, spawn_rate: 5}
steady-state-hypothesis:
  slos:
    - error_rate: {below: 0.01}
method:
  - fault: pod_kill
    args: {selector: app=api}
recovery: {within_s: 30}
"""


def test_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*--chaos-target=*",
            "*--chaos-ledger=*",
            "*--chaos-cleanup*",
            "*--resilience-report=*",
            "*--chaos-dry-run*",
            "*chaos_target (string)*",
        ]
    )


def test_chaos_marker_is_registered_for_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-m", "chaos")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("how", ["option", "ini"])
def test_unknown_target_is_a_usage_error(pytester: pytest.Pytester, how: str) -> None:
    pytester.makepyfile("def test_x(): pass")
    if how == "ini":
        pytester.makeini("[pytest]\nchaos_target = minikube\n")
        result = pytester.runpytest()
    else:
        result = pytester.runpytest("--chaos-target=minikube")
    result.stderr.fnmatch_lines(
        ["*--chaos-target='minikube' is not a known target; use one of: local, kubernetes"]
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_missing_services_file_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--chaos-services=nope.yaml")
    result.stderr.fnmatch_lines(["*--chaos-services: no such file:*nope.yaml*"])


def test_yaml_scenarios_are_collected_as_chaos_items(pytester: pytest.Pytester) -> None:
    pytester.mkdir("scenarios")
    (pytester.path / "scenarios" / "kill_api.yaml").write_text(GOOD_SCENARIO)
    (pytester.path / "notes.yaml").write_text("not: a scenario\n")  # outside scenarios/: ignored
    result = pytester.runpytest("--collect-only", "-q", "-m", "chaos", "--strict-markers")
    result.stdout.fnmatch_lines(["scenarios/kill_api.yaml::kill_api", "*1 test collected*"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "title: x\nmethod: [{fault: pod_kil}]\n",
            "kill.yaml:2, field 'method[0].fault': unknown fault 'pod_kil'",
        ),
        ("title: x\n", "kill.yaml:1, field 'method': is required"),
        (
            "title: x\nmethod:\n  - fault: pod_kill\n    args: 3\n",
            "kill.yaml:4, field 'method[0].args': must be dict, got 3",
        ),
        ("title: x\nmethod: [\n", "kill.yaml:3: not valid YAML"),
        (
            "title: x\nsteady-state-hypothesis:\n  slos:\n    - error_rate: {below: 7}\n"
            "method: [{fault: pod_kill}]\n",
            "kill.yaml:4, field 'steady-state-hypothesis.slos[0].error_rate': "
            "error rate bound is a fraction in 0..1",
        ),
        (
            "title: x\nload: {userz: 3}\nmethod: [{fault: pod_kill}]\n",
            "field 'load.userz': unknown load option 'userz'",
        ),
    ],
)
def test_malformed_scenarios_name_file_line_and_field(
    pytester: pytest.Pytester, text: str, expected: str
) -> None:
    pytester.mkdir("scenarios")
    (pytester.path / "scenarios" / "kill.yaml").write_text(text)
    result = pytester.runpytest("--collect-only")
    assert expected in result.stdout.str()
    result.stdout.no_fnmatch_line("*Traceback*")
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_cleanup_with_empty_ledger_exits_zero(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--chaos-cleanup", "--chaos-ledger=ledger.sqlite")
    result.stdout.fnmatch_lines(["chaos cleanup: nothing open in *ledger.sqlite"])
    assert result.ret == 0


def test_the_main_job_starts_without_a_warning_when_the_test_extra_is_absent() -> None:
    """pyproject.toml configures test-only plugins; a user without them sees nothing of it."""
    repo = Path(__file__).resolve().parents[2]
    absent = ["-p", "no:timeout", "-p", "no:asyncio", "-p", "no:kmock", "-p", "no:cacheprovider"]
    collect = ["--collect-only", "-q", "-m", "chaos", "scenarios"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *absent, *collect],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).lower(), done.stdout + done.stderr


KUBECONFIG = """apiVersion: v1
kind: Config
current-context: kind-chaos
clusters:
- name: kind-chaos
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: kind-chaos
  context: {cluster: kind-chaos, user: ci}
users:
- name: ci
  user: {token: not-a-secret}
"""


def test_a_kubernetes_run_says_which_cluster_it_will_break_before_contacting_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = pytester.path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess(
        "--chaos-target=kubernetes", "--chaos-namespace=chaos-demo", "--collect-only"
    )
    result.stdout.fnmatch_lines(
        [
            "chaos target: kubernetes, context 'kind-chaos', API server https://127.0.0.1:1, "
            f"namespace 'chaos-demo' (kubeconfig {kubeconfig})"
        ]
    )
    assert "not-a-secret" not in result.stdout.str()
