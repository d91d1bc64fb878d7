"""The fault fixtures' injectors and the ``load`` fixture's starter, as a user's code sees them.

Each is a ``@final`` class with a docstring, exported from ``pytest_resilience``, whose
``__call__`` has the signature of the fault it injects (so a fault's new option cannot be
forgotten here), and a user's test annotated with them is type-checked by mypy: a wrong
keyword, a wrong type or a missing argument is reported (before issue 14 the fixtures were
``Callable[..., Any]`` and every misuse passed).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pytest_resilience
from pytest_resilience.faults import injectors
from pytest_resilience.faults.deploy import BadDeploy
from pytest_resilience.faults.disk import DiskFill
from pytest_resilience.faults.memory import MemoryStress
from pytest_resilience.faults.network import NetworkBlock
from pytest_resilience.faults.node import NodeFailure
from pytest_resilience.faults.pod_kill import PodKill
from pytest_resilience.faults.toxics import Latency, ProxyDown, Toxic
from pytest_resilience.load import start_load
from pytest_resilience.load_starter import LoadStarter

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pyproject.toml"  # [tool.mypy]
#: apart from test_typing's cache: here the package is analysed as installed, not as source
CACHE = Path(tempfile.gettempdir()) / "pytest-resilience-mypy-user-cache"

#: fixture -> (its injector, the fault class it constructs)
FAULT_FIXTURES: dict[str, tuple[type, type]] = {
    "pod_kill": (injectors.PodKillInjector, PodKill),
    "network_block": (injectors.NetworkBlockInjector, NetworkBlock),
    "latency": (injectors.LatencyInjector, Latency),
    "toxic": (injectors.ToxicInjector, Toxic),
    "proxy_down": (injectors.ProxyDownInjector, ProxyDown),
    "disk_fill": (injectors.DiskFillInjector, DiskFill),
    "memory_stress": (injectors.MemoryStressInjector, MemoryStress),
    "node_failure": (injectors.NodeFailureInjector, NodeFailure),
    "bad_deploy": (injectors.BadDeployInjector, BadDeploy),
}


def _params(
    func: Callable[..., Any], *, leave_out: tuple[str, ...] = ()
) -> list[inspect.Parameter]:
    return [
        p for p in inspect.signature(func).parameters.values() if p.name not in ("self", *leave_out)
    ]


def _mismatches(ours: list[inspect.Parameter], theirs: list[inspect.Parameter]) -> list[str]:
    """What differs between two parameter lists; an option that is positional-or-keyword
    there may be keyword-only here (the injectors take every option by keyword)."""
    if [p.name for p in ours] != [p.name for p in theirs]:
        return [f"names {[p.name for p in ours]} != {[p.name for p in theirs]}"]
    found = []
    for mine, other in zip(ours, theirs, strict=True):
        stricter = (
            mine.kind is inspect.Parameter.KEYWORD_ONLY
            and other.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            and other.default is not inspect.Parameter.empty
        )
        if mine.kind is not other.kind and not stricter:
            found.append(f"{mine.name}: kind {mine.kind.name} != {other.kind.name}")
        if mine.default != other.default:
            found.append(f"{mine.name}: default {mine.default!r} != {other.default!r}")
        if mine.annotation != other.annotation:
            found.append(f"{mine.name}: type {mine.annotation!r} != {other.annotation!r}")
    return found


@pytest.mark.parametrize("fixture", sorted(FAULT_FIXTURES))
def test_each_injector_takes_what_its_fault_takes(fixture: str) -> None:
    injector, fault = FAULT_FIXTURES[fixture]
    assert _mismatches(_params(injector.__call__), _params(fault.__init__)) == []
    assert inspect.signature(injector.__call__).return_annotation == "ActiveFault"


def test_the_load_starter_takes_what_start_load_takes() -> None:
    # the timeline is the scenario's own; the host and workers have fixture defaults, and
    # where the workers run is the target's capability (start_load_on), not an argument
    theirs = _params(start_load, leave_out=("timeline", "workers_in"))
    ours = _params(LoadStarter.__call__)
    by_name = {p.name: p for p in theirs}
    assert [p.name for p in ours] == [p.name for p in theirs]
    assert by_name["workers"].default == 1  # the fixture's default is --load-workers instead
    differ = _mismatches(ours, theirs)
    assert differ == [
        "host: default None != <class 'inspect._empty'>",
        "host: type 'str | None' != 'str'",
        "workers: default None != 1",
        "workers: type 'int | None' != 'int'",
    ]


@pytest.mark.parametrize("cls", [*(i for i, _ in FAULT_FIXTURES.values()), LoadStarter])
def test_each_is_final_documented_and_exported(cls: type) -> None:
    assert getattr(cls, "__final__", False), f"{cls.__name__} is not @final"
    assert cls.__doc__ and cls.__call__.__doc__, f"{cls.__name__} lacks a docstring"
    assert getattr(pytest_resilience, cls.__name__) is cls
    assert cls.__name__ in pytest_resilience.__all__


def test_every_fault_fixture_of_the_plugin_is_covered_here() -> None:
    from pytest_resilience.scenario import FAULTS

    # load_surge is a step the scenario runner carries out itself, through ``load``
    assert sorted(FAULT_FIXTURES) == sorted(f for f in FAULTS if f != "load_surge")


USER_TEST = """
from __future__ import annotations

import signal

from pytest_resilience import (
    ActiveFault,
    BadDeployInjector,
    LatencyInjector,
    LoadRun,
    LoadStarter,
    NetworkBlockInjector,
    NodeFailureInjector,
    PodKillInjector,
    ToxicInjector,
)


def test_api_survives(
    pod_kill: PodKillInjector,
    latency: LatencyInjector,
    network_block: NetworkBlockInjector,
    toxic: ToxicInjector,
    node_failure: NodeFailureInjector,
    bad_deploy: BadDeployInjector,
    load: LoadStarter,
) -> None:
    run: LoadRun = load(users=5, rps=20.0)
    with pod_kill("app=api", count=1, sig=signal.SIGTERM) as killed:
        assert killed.active
    slow: ActiveFault = latency("postgres", ms=500, jitter_ms=50)
    slow.revert()
    network_block(port=5432, direction="both", action="reject")
    toxic("redis", "bandwidth", rate=64)
    node_failure("node-a", hang=True)
    bad_deploy("api", version="v3")
    run.stop()
"""

MISUSE = """
from __future__ import annotations

from pytest_resilience import LatencyInjector, LoadStarter, NetworkBlockInjector
from pytest_resilience import NodeFailureInjector, PodKillInjector


def test_misuse(
    pod_kill: PodKillInjector,
    latency: LatencyInjector,
    network_block: NetworkBlockInjector,
    node_failure: NodeFailureInjector,
    load: LoadStarter,
) -> None:
    pod_kill("app=api", cont=1)
    latency("postgres", ms="500")
    latency("postgres")
    network_block(port=5432, direction="sideways")
    node_failure("node-a", True)
    load(user=5)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict over one user test file, the package found as installed (py.typed)."""
    pytest.importorskip("mypy", reason="mypy is in the [test] extra: pip install -e '.[test]'")
    path = tmp_path / "test_user.py"
    path.write_text(textwrap.dedent(source))
    argv = [sys.executable, "-m", "mypy", "--config-file", str(CONFIG), "--cache-dir", str(CACHE)]
    argv += ["--no-error-summary", "--hide-error-context", "--no-pretty", str(path)]
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_a_users_test_type_checks_against_the_fixtures(tmp_path: Path) -> None:
    done = _mypy(tmp_path, USER_TEST)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_users_misuse_of_the_fixtures_is_reported(tmp_path: Path) -> None:
    done = _mypy(tmp_path, MISUSE)
    lines = [
        line.split(": error: ", 1)[1] for line in done.stdout.splitlines() if ": error: " in line
    ]
    assert done.returncode == 1, done.stdout + done.stderr
    expected = [
        'Unexpected keyword argument "cont"',
        'Argument "ms" to "__call__" of "LatencyInjector" has incompatible type "str"',
        'Missing named argument "ms"',
        'Argument "direction" to "__call__" of "NetworkBlockInjector" has incompatible type',
        "Too many positional arguments",
        'Unexpected keyword argument "user"',
    ]
    assert len(lines) == len(expected), done.stdout
    for line, wanted in zip(lines, expected, strict=True):
        assert wanted in line, done.stdout
