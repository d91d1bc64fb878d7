"""The services file's cross-checks: one dependency order, one place a cycle is found."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_resilience.errors import ConfigError
from pytest_resilience.targets.services import DependencyCycle, dependency_order, parse_services

CYCLE = """\
services:
  - name: web
    versions: {v1: [x]}
    depends_on: [api]
  - name: api
    versions: {v1: [x]}
    depends_on: [db]
  - name: db
    versions: {v1: [x]}
    depends_on: [api]
"""


def test_a_depends_on_cycle_names_the_cycle_field_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_services(CYCLE, source="services.yaml")
    assert caught.value.message == "depends_on forms a cycle: api -> db -> api (line 5)"
    assert (caught.value.source, caught.value.field, caught.value.line) == (
        "services.yaml",
        "services[1]",
        5,
    )


def test_dependency_order_starts_dependencies_first() -> None:
    chain = CYCLE.rsplit("    depends_on", 1)[0]  # web -> api -> db
    assert dependency_order(parse_services(chain)) == ["db", "api", "web"]


def test_specs_built_in_python_meet_the_same_cycle_check() -> None:
    web, api, db = parse_services(CYCLE.rsplit("    depends_on", 1)[0])
    looped = [web, api, dataclasses.replace(db, depends_on=("web",))]
    with pytest.raises(DependencyCycle) as caught:
        dependency_order(looped)
    assert caught.value.cycle == ("web", "api", "db", "web")
    assert caught.value.line == 2


def test_the_local_target_orders_python_specs_with_the_same_check() -> None:
    """LocalTarget's start order is dependency_order's: its cycle error names the file's line,
    and only an unknown dependency (which no file check saw) is the target's to refuse."""
    from pytest_resilience.errors import TargetError
    from pytest_resilience.targets.local.state import _dependency_order

    web, api, db = parse_services(CYCLE.rsplit("    depends_on", 1)[0])
    assert _dependency_order([web, api, db]) == ["db", "api", "web"]
    with pytest.raises(DependencyCycle) as caught:
        _dependency_order([web, api, dataclasses.replace(db, depends_on=("web",))])
    assert caught.value.cycle == ("web", "api", "db", "web")
    with pytest.raises(TargetError, match="'db' depends on unknown service 'cache'"):
        _dependency_order([web, api, dataclasses.replace(db, depends_on=("cache",))])
