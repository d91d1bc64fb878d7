"""A YAML scenario that breaks on something other than an SLO is reported, not an INTERNALERROR."""

from __future__ import annotations

import pytest


def test_an_unexpected_error_in_a_yaml_scenario_is_a_failure_with_its_traceback(
    pytester: pytest.Pytester,
) -> None:
    # The engine this scenario asks for (lazily, during the call) breaks with an error
    # that is neither an SLO's AssertionError nor a ConfigError: pytest 9's Function takes
    # no style= in repr_failure, so passing it on turned this into an INTERNALERROR.
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def remediation_engine():
            raise RuntimeError("engine exploded on purpose")
        """
    )
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "broken.yaml").write_text(
        "title: engine breaks\n"
        "remediation: true\n"
        "method:\n"
        "  - fault: pod_kill\n"
        "    args: {selector: app=api}\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "scenarios/")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RuntimeError: engine exploded on purpose*"])
