"""The Target seam holds: nothing above it asks which target it is, and a scenario needing
what its target cannot do is skipped at collection, naming the capability.

Above the seam are faults/, slo.py, probes.py, monitoring.py and engine/ (DESIGN.md,
Targets). The check parses each module (ast, so comments and strings do not count) and
flags a comparison of a target's ``name`` and any ``getattr``/``hasattr`` on a target.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import pytest_resilience
from pytest_resilience.capabilities import offered
from pytest_resilience.targets.base import CAPABILITIES, FaultPrimitives
from pytest_resilience.targets.kubernetes import KubernetesTarget
from pytest_resilience.targets.local import LocalTarget

pytest_plugins = ["pytester"]

PACKAGE = Path(pytest_resilience.__file__).parent
ABOVE_THE_SEAM = ["faults", "slo.py", "probes.py", "monitoring.py", "engine"]


def _modules() -> list[Path]:
    found: list[Path] = []
    for entry in ABOVE_THE_SEAM:
        path = PACKAGE / entry
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def _is_target(node: ast.AST) -> bool:
    """``target``, ``ctx.target``, ``self.ctx.target``, ``kube_target`` ...: a target."""
    if isinstance(node, ast.Name):
        return node.id.endswith("target")
    if isinstance(node, ast.Attribute):
        return node.attr.endswith("target")
    return False


def seam_breaches(source: str, filename: str = "<source>") -> list[str]:
    """Each place ``source`` compares a target's name or probes a target with getattr."""
    breaches = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if (
                    isinstance(side, ast.Attribute)
                    and side.attr == "name"
                    and _is_target(side.value)
                ):
                    breaches.append(f"{filename}:{node.lineno}: compares {ast.unparse(side)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and node.args
            and _is_target(node.args[0])
        ):
            breaches.append(f"{filename}:{node.lineno}: probes with {ast.unparse(node)}")
    return breaches


def test_the_check_sees_what_it_is_for() -> None:
    bad = textwrap.dedent(
        """
        if ctx.target.name == "kubernetes":
            pass
        port = getattr(self.target, "pod_port", None)
        if "local" != target.name or hasattr(target, "rollout"):
            pass
        """
    )
    assert len(seam_breaches(bad)) == 4, seam_breaches(bad)
    fine = 'raise FaultError(f"target {ctx.target.name!r} has none")\nx = getattr(exc, "mark")\n'
    assert seam_breaches(fine) == []


def test_nothing_above_the_seam_asks_which_target_it_is() -> None:
    modules = _modules()
    assert len(modules) > 10, modules  # the rooms exist where DESIGN.md says
    breaches = [b for path in modules for b in seam_breaches(path.read_text(), str(path))]
    assert breaches == [], "\n".join(breaches)


def test_kube_dispatch_is_gone_and_the_kubernetes_modules_do_not_import_each_other() -> None:
    assert not (PACKAGE / "faults" / "kube_dispatch.py").exists()
    tree = ast.parse((PACKAGE / "targets" / "kubernetes" / "faults.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    # the target imports the primitives (its mixins); they never import it back
    assert not {m for m in imported if m == "target" or m.endswith((".target", ".kubernetes"))}


def test_both_targets_carry_the_seam_and_say_what_they_offer() -> None:
    assert issubclass(LocalTarget, FaultPrimitives)
    assert issubclass(KubernetesTarget, FaultPrimitives)
    assert offered(LocalTarget) == set(CAPABILITIES) - {"load_workers"}  # it forks them here
    # pods reached through the API server (proxy, log), releases as template changes; a
    # failed node is drained, never left NotReady with its pods (the kubelet heartbeats)
    assert offered(KubernetesTarget) == set(CAPABILITIES) - {"pod_resources", "node_outage"}


SCENARIOS = """
import pytest

@pytest.mark.chaos(requires=["pod_resources"])
def test_memory_share(chaos_target):
    raise AssertionError("must not run: the target reads no pod resource usage")

@pytest.mark.chaos
def test_slow_database(latency):
    raise AssertionError("must not run: no Toxiproxy server was given")

def test_plain():
    pass
"""


def test_a_scenario_needing_a_missing_capability_is_skipped_at_collection(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_scenarios=SCENARIOS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--chaos-target=kubernetes", "-rs"
    )
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED*test_scenarios.py:*target 'kubernetes' lacks the capability 'pod_resources'*",
            "SKIPPED*test_scenarios.py:*target 'kubernetes' lacks the capability "
            "'dependency_proxies'*",
        ],
        consecutive=False,
    )
    assert "AttributeError" not in result.stdout.str()


def test_an_unknown_capability_is_a_usage_error_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_typo="""
        import pytest

        @pytest.mark.chaos(requires=["pod_admn"])
        def test_it():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_typo.py::test_it*unknown capability 'pod_admn'*known:*"])


def test_a_yaml_scenario_is_judged_by_the_faults_of_its_method(pytester: pytest.Pytester) -> None:
    shipped = Path(__file__).parents[2] / "scenarios" / "bad_release_rollback.yaml"
    (pytester.path / "scenarios").mkdir()
    # the release's fault swapped for a Toxiproxy one, which Kubernetes lacks without a URL
    text = shipped.read_text().replace(
        "fault: bad_deploy\n    args: {workload: api, version: v2}",
        "fault: latency\n    args: {proxy: postgres, ms: 300}",
    )
    assert "fault: latency" in text
    (pytester.path / "scenarios" / "release.yaml").write_text(text)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--chaos-target=kubernetes", "-rs", "scenarios"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*release.yaml*lacks the capability 'dependency_proxies'*"])


LATENCY_SCENARIO = """
import pytest

@pytest.mark.chaos
def test_slow_database(latency):
    raise AssertionError("must not run: no Toxiproxy server was given")
"""


def test_kubernetes_without_a_toxiproxy_url_skips_the_toxiproxy_faults(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_latency=LATENCY_SCENARIO)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--chaos-target=kubernetes", "-rs"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED*lacks the capability 'dependency_proxies': no Toxiproxy server*--toxiproxy-url*"]
    )


def _declared_on_the_seam() -> set[str]:
    """What the Target protocol and its capability protocols declare (all a scenario may call)."""
    from pytest_resilience.targets import base

    protocols = [
        value
        for value in vars(base).values()
        if isinstance(value, type) and getattr(value, "_is_protocol", False)
    ]
    return {
        name
        for protocol in protocols
        for cls in protocol.__mro__
        if cls.__module__ == base.__name__
        for name in [*vars(cls), *getattr(cls, "__annotations__", {})]
        if not name.startswith("_")
    }


def test_the_shipped_scenarios_ask_the_target_only_what_the_seam_declares() -> None:
    """A scenario calling a method one target happens to have runs on that target only."""
    declared = _declared_on_the_seam()
    assert {"pods", "rollout", "workloads", "kill_pod"} <= declared  # the check sees the seam
    outside = [
        f"{path.name}:{node.lineno}: chaos_target.{node.attr}"
        for path in sorted((Path(__file__).parents[2] / "scenarios").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "chaos_target"
        and node.attr not in declared
    ]
    assert outside == [], "\n".join(outside)
