"""Inhibit rules are playbook data, read as Alertmanager reads its ``inhibit_rules``."""

from __future__ import annotations

import textwrap

import pytest
from engine_support import ProcTarget, wait_for

from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Alert, load_playbook, make_engine
from pytest_resilience.engine.inhibition import SYMPTOM_ALERTS, Inhibitor, Matcher
from pytest_resilience.engine.playbooks import load_playbooks
from pytest_resilience.errors import ConfigError

QUEUE = """\
playbook: Queue Backlog
alerts: [QueueBacklog]
steps:
  - name: scale the workers
    actions: [{action: scale_up, by: 1}]
inhibit_rules:
  # a backlog is what a database outage looks like from the queue: wait for the database
  - source_matchers: [alertname = DatabaseDown]
    target_matchers: ['alertname =~ "QueueBacklog"']
    equal: [target]
"""


def write(tmp_path, text, name="book.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_bundled_inhibit_rules_hold_back_the_symptom_alerts_only():
    books = load_playbooks(BUNDLED_PLAYBOOKS)
    inhibitor = Inhibitor([r for b in books for r in b.inhibit_rules], lambda name: name)
    held = {
        name
        for book in books
        for name in book.alerts
        if any(r.matches_target(inhibitor.labels(Alert(name, "api"))) for r in inhibitor.rules)
    }
    assert held == SYMPTOM_ALERTS
    assert all(r.origin.startswith(str(BUNDLED_PLAYBOOKS)) for r in inhibitor.rules)


def test_a_cause_holds_symptoms_on_its_target_a_node_everywhere():
    books = load_playbooks(BUNDLED_PLAYBOOKS)
    inhibitor = Inhibitor([r for b in books for r in b.inhibit_rules], lambda name: name)
    symptom_api, symptom_web = Alert("HighErrorRate", "api"), Alert("HighErrorRate", "web")
    inhibitor.started(("PodCrashLoop", "api"), Alert("PodCrashLoop", "api"))
    assert inhibitor.cause_of(symptom_api) == "PodCrashLoop on api is being handled"
    assert inhibitor.cause_of(symptom_web) is None
    assert inhibitor.cause_of(Alert("HighMemoryUsage", "api")) is None  # a cause, not held
    inhibitor.started(("NodeNotReady", "node-b"), Alert("NodeNotReady", "node-b"))
    assert inhibitor.cause_of(symptom_web) == "NodeNotReady on node-b is being handled"
    inhibitor.hold(symptom_web)
    assert inhibitor.released_by(Alert("PodCrashLoop", "api")) == []  # web: not its scope
    inhibitor.ended(("NodeNotReady", "node-b"))
    assert inhibitor.released_by(Alert("NodeNotReady", "node-b")) == [symptom_web]


def test_a_symptom_held_by_an_incident_with_no_target_is_released_when_it_closes():
    """It was held on every target, but the old release looked only at its own (empty) one:
    the held alert stayed held until it resolved."""
    books = load_playbooks(BUNDLED_PLAYBOOKS)
    inhibitor = Inhibitor([r for b in books for r in b.inhibit_rules], lambda name: name)
    cause, symptom = Alert("KubePodNotReady", ""), Alert("ErrorRateHighCritical", "api")
    inhibitor.started(cause.key, cause)
    assert inhibitor.cause_of(symptom) == "KubePodNotReady on  is being handled"
    inhibitor.hold(symptom)
    inhibitor.ended(cause.key)
    assert inhibitor.released_by(cause) == [symptom]


def test_two_alerts_matching_both_sides_do_not_hold_each_other_back(tmp_path):
    """Alertmanager's two-sided exclusion (inhibit/inhibit.go, ``excludeTwoSidedMatch``)."""
    book = load_playbook(
        write(
            tmp_path,
            QUEUE.replace("[alertname = DatabaseDown]", "['severity = critical']").replace(
                "'alertname =~ \"QueueBacklog\"'", "'severity = critical'"
            ),
        )
    )
    inhibitor = Inhibitor(book.inhibit_rules, lambda name: name)
    inhibitor.started(("A", "api"), Alert("A", "api", severity="critical"))
    assert inhibitor.cause_of(Alert("B", "api", severity="critical")) is None


def test_a_project_playbooks_inhibit_rule_takes_effect(tmp_path):
    own = tmp_path / "remediators"
    own.mkdir()
    write(own, QUEUE)
    engine = make_engine(
        ProcTarget({}), store_path=tmp_path / "e.db", playbooks_dir=own, dry_run=True
    ).start()
    try:
        assert len(engine.inhibitor.rules) == 4  # the bundled three and the project's
        engine.submit(Alert("DatabaseDown", "api", severity="critical"))  # no playbook: paged
        wait_for(lambda: len(engine.incidents()) == 1, what="the cause's incident")
        engine.submit(Alert("QueueBacklog", "api"))
        engine.submit(Alert("QueueBacklog", "billing"))  # another target: not held back
        wait_for(lambda: len(engine.incidents()) == 2, what="billing's incident")
        assert engine.wait_idle(10)
        decisions = engine.store.alert_decisions()
        assert decisions.get("inhibited: DatabaseDown on api is being handled") == 1
        assert {(i.alert_name, i.target) for i in engine.incidents()} == {
            ("DatabaseDown", "api"),
            ("QueueBacklog", "billing"),
        }
        engine.submit(Alert("DatabaseDown", "api", severity="critical").resolved())
        wait_for(lambda: len(engine.incidents()) == 3, what="the backlog decided, released")
        assert ("QueueBacklog", "api") in {(i.alert_name, i.target) for i in engine.incidents()}
    finally:
        engine.close()


def test_an_engine_given_no_inhibit_rules_holds_nothing_back(tmp_path):
    engine = make_engine(
        ProcTarget({}), store_path=tmp_path / "e.db", rootdir=tmp_path, inhibit_rules=()
    )
    try:
        engine.inhibitor.started(("PodCrashLoop", "api"), Alert("PodCrashLoop", "api"))
        assert engine.inhibitor.cause_of(Alert("HighErrorRate", "api")) is None
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("replace", "by", "line", "field", "words"),
    [
        ("[alertname = DatabaseDown]", "[alertname == DatabaseDown]", 8,
         "inhibit_rules[0].source_matchers[0]", "expected 'label op value'"),
        ("'alertname =~ \"QueueBacklog\"'", "'alertname =~ \"(Queue\"'", 9,
         "inhibit_rules[0].target_matchers[0]", "invalid regex"),
        ("    target_matchers: ['alertname =~ \"QueueBacklog\"']\n", "", 8,
         "inhibit_rules[0].target_matchers", "needs 'target_matchers'"),
        ("equal: [target]", "equal: [tar-get]", 10, "inhibit_rules[0].equal[0]",
         "expected a label name"),
        ("equal: [target]", "equals: [target]", 10, "inhibit_rules[0].equals", "unknown field"),
        ("source_matchers: [alertname = DatabaseDown]", "source_match: {alertname: DatabaseDown}",
         8, "inhibit_rules[0].source_match", "deprecated form; write source_matchers"),
        ("source_matchers: [alertname = DatabaseDown]", "source_matchers: [{alertname: X}]", 8,
         "inhibit_rules[0].source_matchers[0]", "a matcher is a string"),
    ],
)  # fmt: skip
def test_a_malformed_inhibit_rule_is_refused_naming_file_line_field(
    tmp_path, replace, by, line, field, words
):
    assert replace in QUEUE
    path = write(tmp_path, QUEUE.replace(replace, by))
    with pytest.raises(ConfigError) as info:
        load_playbook(path)
    message = str(info.value)
    assert f"{path}:{line}" in message, message
    assert words in message, message
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("alertname = NodeNotReady", {"alertname": "NodeNotReady"}, True),
        ('alertname="NodeNotReady"', {"alertname": "KubeNodeNotReady"}, False),
        ('alertname =~ "A|B"', {"alertname": "AB"}, False),  # anchored at both ends
        ('alertname !~ "A|B"', {"alertname": "C"}, True),
        ('target = ""', {}, True),  # an absent label reads as empty
        ("team != db", {}, True),
    ],
)
def test_matchers_read_as_alertmanager_s(text, labels, matches):
    assert Matcher.parse(text).matches(labels) is matches
