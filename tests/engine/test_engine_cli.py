"""``python -m pytest_resilience.engine``: incidents are listed without reading SQLite, and
every ``serve`` option says what it does."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from engine_support import SLEEP, ProcTarget, fast_playbooks, wait_for

from pytest_resilience.engine import Engine
from pytest_resilience.engine.__main__ import build_parser
from pytest_resilience.engine.alerts import Alert
from pytest_resilience.engine.store import Store


def _subparser(name: str):
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    return choices[name]


@pytest.mark.parametrize("command", ["serve", "incidents", "postmortem"])
def test_every_option_has_a_help_line(command):
    missing = [
        "/".join(action.option_strings) or action.dest
        for action in _subparser(command)._actions
        if not (action.help or "").strip()
    ]
    assert missing == [], f"{command} options without help: {missing}"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_resilience.engine", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A store a real engine wrote: one incident paged and still firing, one paged and
    resolved, one dry-run remediation, and one from three days ago."""
    tmp = tmp_path_factory.mktemp("cli")
    target = ProcTarget({"api": (1, {"v1": SLEEP}, "v1")})
    engine = Engine(target, playbooks_dir=fast_playbooks(tmp / "books"), store_path=tmp / "e.db")
    engine.start()
    try:
        engine.submit(Alert("NoPlaybookForThis", "checkout", severity="page"))
        engine.submit(Alert("NoPlaybookEither", "search"))
        wait_for(lambda: len(engine.incidents()) == 2, what="two incidents")
        engine.submit(Alert("NoPlaybookEither", "search").resolved())
        wait_for(
            lambda: any(i.status == "resolved" for i in engine.incidents()), what="one resolved"
        )
    finally:
        engine.close()
        target.close()
    store = Store(tmp / "e.db")
    try:
        old = store.incidents()[0]
        store.open_incident(
            replace(
                old,
                id="inc-three-days-ago",
                alert_name="PodCrashLoop",
                target="api",
                severity="critical",
                playbook="Pod Crash Loop",
                reason="fixed after step 'restart pod'",
                opened_at=time.time() - 3 * 86400,
                status="resolved",
                closed_at=time.time() - 3 * 86400 + 60,
            )
        )
    finally:
        store.close()
    return tmp / "e.db"


def test_incidents_table_lists_every_incident_oldest_first(store_path):
    done = cli("incidents", "--store", str(store_path))
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.strip().splitlines()
    assert header.split()[:4] == ["ID", "OPENED", "(UTC)", "STATUS"]
    assert rows[0].split()[0] == "inc-three-days-ago"
    assert len(rows) == 3
    firing = next(r for r in rows if "NoPlaybookForThis" in r)
    assert "escalated" in firing and "checkout" in firing and "page" in firing
    assert "no playbook handles alert" in firing


def test_open_and_since_filter(store_path):
    opened = json.loads(
        cli("incidents", "--store", str(store_path), "--open", "--format", "json").stdout
    )
    assert [(i["alert"], i["status"], i["closed_at"]) for i in opened] == [
        ("NoPlaybookForThis", "escalated", None)
    ]
    recent = json.loads(
        cli("incidents", "--store", str(store_path), "--since", "1d", "--format", "json").stdout
    )
    assert {i["alert"] for i in recent} == {"NoPlaybookForThis", "NoPlaybookEither"}
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 4 * 86400))
    every = json.loads(
        cli("incidents", "--store", str(store_path), "--since", iso, "--format", "json").stdout
    )
    assert len(every) == 3
    # not "--since 1s": the fixture's incidents may be younger than a second
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    none = cli("incidents", "--store", str(store_path), "--open", "--since", later)
    assert none.returncode == 0 and "no incidents in" in none.stdout


def test_a_listed_id_feeds_postmortem(store_path):
    listed = json.loads(cli("incidents", "--store", str(store_path), "--format", "json").stdout)
    incident = next(i for i in listed if i["alert"] == "NoPlaybookForThis")
    report = cli("postmortem", "--store", str(store_path), incident["id"])
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith(f"# Incident {incident['id']}: NoPlaybookForThis on checkout")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "yesterday-ish"], "--since 'yesterday-ish': give a duration"),
        (["--store", "/nonexistent/e.db"], "no store at /nonexistent/e.db"),
    ],
)
def test_bad_arguments_say_what_to_give(store_path, args, words):
    base = ["incidents", "--store", str(store_path)]
    done = cli(*base, *args) if args[0] != "--store" else cli("incidents", *args)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
