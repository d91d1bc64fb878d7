"""``pytest_resilience``'s public names: explicit, each importable, and imported only on use.

Installing the plugin makes pytest import this package in every test suite, chaos or not
(benchmarks/bench_collect.py measures what that costs), so ``import pytest_resilience``
alone must load none of its modules; ``from pytest_resilience import Timeline`` loads what
that name needs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_resilience

#: issue 14's names: what a test meets through the fixtures
CONTRACT = ("Target", "Pod", "ActiveFault", "SLOMonitor", "LoadRun", "Engine", "Timeline")


def _in_fresh_process(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_all_is_sorted_and_holds_the_contract() -> None:
    assert sorted(pytest_resilience.__all__) == pytest_resilience.__all__
    assert set(CONTRACT) <= set(pytest_resilience.__all__)


@pytest.mark.parametrize("name", pytest_resilience.__all__)
def test_each_public_name_is_importable_and_defined_where_it_says(name: str) -> None:
    value = getattr(pytest_resilience, name)
    assert value.__name__ == name
    assert value.__module__.startswith("pytest_resilience.")
    assert name in dir(pytest_resilience)


def test_importing_the_package_loads_none_of_its_modules() -> None:
    loaded = _in_fresh_process(
        "import sys, pytest_resilience\n"
        "print(sorted(m for m in sys.modules if m.startswith('pytest_resilience.')))"
    )
    assert loaded == "[]"


def test_a_name_loads_its_own_module_only_when_asked() -> None:
    loaded = _in_fresh_process(
        "import sys\n"
        "from pytest_resilience import ConfigError\n"
        "print('pytest_resilience.errors' in sys.modules, "
        "'pytest_resilience.engine' in sys.modules, 'pytest_resilience.timeline' in sys.modules)"
    )
    assert loaded == "True False False"


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        _ = pytest_resilience.NoSuchThing  # type: ignore[attr-defined]  # the error is the test


def test_submodules_stay_importable_from_the_package() -> None:
    from pytest_resilience import timeline

    assert timeline.Timeline is pytest_resilience.Timeline
