"""The preflight: a scenario whose fault needs what the machine lacks skips at collection,
naming it and the install line; under CI it fails; ``--chaos-doctor`` shows it all."""

from __future__ import annotations

import os
import sys

import pytest

NEEDS_IPTABLES = """
import pytest

@pytest.mark.chaos
def test_blocks_the_database(network_block):
    raise AssertionError("must not run: this machine has no iptables")

@pytest.mark.chaos
def test_kills_a_pod(chaos_target):
    pass

def test_not_chaos(network_block):
    pass
"""


@pytest.fixture
def no_iptables(monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without /usr/sbin, where Debian keeps iptables and tc."""
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}:/usr/bin")
    monkeypatch.delenv("CI", raising=False)


def test_a_fault_needing_a_missing_tool_skips_at_collection_with_the_install_line(
    pytester: pytest.Pytester, no_iptables: None
) -> None:
    pytester.makepyfile(NEEDS_IPTABLES)
    result = pytester.runpytest("-m", "chaos", "-rs", "--collect-only", "-q")
    result.assert_outcomes()  # collection alone starts nothing
    result = pytester.runpytest("-rs", "-k", "blocks")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*iptables: not on PATH*(apt-get install -y iptables)*"])


def test_under_ci_the_same_scenario_fails_with_the_reason(
    pytester: pytest.Pytester, no_iptables: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(NEEDS_IPTABLES)
    result = pytester.runpytest("-k", "blocks")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*apt-get install -y iptables*CI is set, so this is an error*"])
    assert "must not run" not in result.stdout.str()


def test_the_doctor_prints_checks_and_verdicts_and_runs_nothing(
    pytester: pytest.Pytester, no_iptables: None
) -> None:
    pytester.makepyfile(NEEDS_IPTABLES)
    result = pytester.runpytest("--chaos-doctor")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "chaos doctor: target local; not CI",
            "*MISS iptables*not on PATH*-> apt-get install -y iptables",
            "scenarios: 1 run, 1 skip (this machine), 0 skip (target lacks a capability)",
            "  run   test_the_doctor*::test_kills_a_pod",
            "  skip  test_the_doctor*::test_blocks_the_database: *iptables*",
            "*no tests ran*",
        ]
    )
    assert "test_not_chaos" not in result.stdout.str()  # only chaos scenarios get a verdict


def test_a_privilege_missing_at_fault_time_skips_the_scenario_or_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_resilience import PrivilegeError

        @pytest.mark.chaos
        def test_chaos():
            raise PrivilegeError("the fault needs CAP_NET_ADMIN")

        def test_plain():
            raise PrivilegeError("not a scenario: an error like any other")
        """
    )
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1, failed=1)
    result.stdout.fnmatch_lines(["SKIPPED*cannot inject the scenario's fault: *CAP_NET_ADMIN*"])
    monkeypatch.setenv("CI", "1")
    pytester.runpytest().assert_outcomes(failed=2)


def test_a_scenario_names_the_servers_it_needs_on_its_marker_or_a_param(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no Debian servers on it
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        """
        import pytest

        SERVERS = pytest.param("real", marks=pytest.mark.chaos(needs=["prometheus"]))

        @pytest.mark.chaos
        @pytest.mark.parametrize("path", [SERVERS, "built-in"])
        def test_loop(path):
            assert path == "built-in", "must not run without prometheus"
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*prometheus: not on PATH*apt-get install -y prometheus*"])


def test_an_unknown_need_is_a_usage_error_naming_the_known_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos(needs=["promethues"])
        def test_x():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x*unknown check(s) 'promethues'; known: root, iptables*"])
