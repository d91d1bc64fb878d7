"""Playbooks load and validate; mistakes name file, line and field."""

from __future__ import annotations

import textwrap

import pytest
from engine_support import ProcTarget

from pytest_resilience.engine import (
    BUNDLED_PLAYBOOKS,
    REGISTRY,
    action,
    load_playbook,
    load_playbooks,
    make_engine,
)
from pytest_resilience.errors import ConfigError

GOOD = """\
playbook: Demo
alerts: [Demo]
steps:
  - name: one
    actions: [rollback]
"""


def write(tmp_path, text, name="book.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_bundled_playbooks_cover_the_strategy_map():
    books = load_playbooks(BUNDLED_PLAYBOOKS)
    routes = {alert: b.name for b in books for alert in b.alerts}
    for alert in (
        "PodCrashLoop", "HighMemoryUsage", "DatabaseConnectionPoolExhaustion",
        "CacheHitRatioDegraded", "DeploymentFailure", "ErrorRateHighCritical", "NodeNotReady",
        "HighCPU",
    ):  # fmt: skip
        assert alert in routes
    assert {"High Error Rate", "Resource Exhaustion"} <= {b.name for b in books}
    errors = next(b for b in books if b.name == "High Error Rate")
    assert any(item.startswith("rca: ") for item in errors.follow_up)
    assert any(item.startswith("prevention: ") for item in errors.follow_up)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (GOOD.replace("rollback", "reboot_universe"), 5, "steps[0].actions[0].action",
         "unknown action 'reboot_universe'"),
        (GOOD.replace("[rollback]", "[{action: scale_up, byy: 2}]"), 5, "steps[0].actions[0]",
         "bad parameters"),
        (GOOD.replace("playbook: Demo\n", ""), 1, "playbook", "missing required field"),
        (GOOD.replace("alerts: [Demo]", "alerts: Demo"), 2, "alerts", "expected list"),
        (GOOD + "    verify: {wait: soon}\n", 6, "steps[0].verify.wait", "invalid duration"),
        (GOOD + "    verify: {on_not_fixed: panic}\n", 6, "steps[0].verify.on_not_fixed",
         "expected one of"),
        (GOOD + "    verify: {condition: {probe: x, above: 1, below: 2}}\n", 6,
         "steps[0].verify.condition", "exactly one"),
        (GOOD.replace("    actions", "    colour: blue\n    actions"), 5, "steps[0].colour",
         "unknown field"),
        (GOOD.replace("steps:", "steps: ["), 4, None, "not valid YAML"),
        ("playbook: X\nalerts: [X]\nsteps:\n  - name: a\n    options:\n"
         "      - when: {value: huge}\n        actions: [rollback]\n",
         6, "steps[0].options[0].when.value", "comparison"),
    ],
)  # fmt: skip
def test_malformed_playbook_names_file_line_field(tmp_path, text, line, field, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_playbook(path)
    message = str(info.value)
    assert f"{path}:{line}" in message, message
    assert words in message
    assert info.value.field == field


def test_two_playbooks_for_one_alert_is_an_error(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD.replace("playbook: Demo", "playbook: Other"), "b.yaml")
    with pytest.raises(ConfigError, match="already handled by playbook 'Demo'"):
        load_playbooks(tmp_path)


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_playbooks(tmp_path / "nope")


def test_team_actions_register_by_name(tmp_path):
    @action("flush_queue_for_test")
    def flush(ctx, *, queue: str = "jobs") -> str:
        return f"flushed {queue}"

    try:
        book = load_playbook(
            write(
                tmp_path, GOOD.replace("[rollback]", "[{action: flush_queue_for_test, queue: q}]")
            )
        )
        assert book.steps[0].options[0].actions[0].params == {"queue": "q"}
    finally:
        REGISTRY.pop("flush_queue_for_test")


def test_a_project_playbook_replaces_the_bundled_one_of_its_name(tmp_path):
    bundled = {b.name: b for b in load_playbooks(BUNDLED_PLAYBOOKS)}
    write(tmp_path, GOOD.replace("Demo", "High Error Rate"), "mine.yaml")
    write(tmp_path, GOOD.replace("Demo", "Team Queue"), "team.yaml")
    books = {b.name: b for b in load_playbooks(BUNDLED_PLAYBOOKS, tmp_path)}
    assert set(books) == {*bundled, "Team Queue"}
    assert books["High Error Rate"].source.startswith(str(tmp_path))
    assert books["High Error Rate"].alerts == ("High Error Rate",)  # the bundled routes went
    assert books["Resource Exhaustion"] == bundled["Resource Exhaustion"]


def test_a_project_playbook_takes_its_alerts_from_the_bundled_ones(tmp_path):
    bundled = {b.name: b for b in load_playbooks(BUNDLED_PLAYBOOKS)}
    write(tmp_path, GOOD.replace("alerts: [Demo]", "alerts: [PodCrashLoop]"))
    books = {b.name: b for b in load_playbooks(BUNDLED_PLAYBOOKS, tmp_path)}
    routes = {alert: name for name, b in books.items() for alert in b.alerts}
    assert routes["PodCrashLoop"] == "Demo"
    crash = next(n for n, b in bundled.items() if "PodCrashLoop" in b.alerts)
    assert set(books.get(crash, bundled[crash]).alerts) == set(bundled[crash].alerts) - {
        "PodCrashLoop"
    }


def test_the_engine_factory_uses_the_bundled_playbooks_without_a_project_dir(tmp_path):
    target = ProcTarget({})
    engine = make_engine(target, store_path=tmp_path / "e.db", rootdir=tmp_path)
    try:
        assert {b.name for b in engine.playbooks} == {
            b.name for b in load_playbooks(BUNDLED_PLAYBOOKS)
        }
    finally:
        engine.close()
        target.close()
