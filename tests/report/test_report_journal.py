"""The Chaos Toolkit journal in the report: each activity run, and how every rollback ended.

The tolerance tutorial's published experiment (tests/chaostoolkit/README.md) runs for real
through the plugin with ``--resilience-report`` and ``--html``; the standalone HTML, its
JSON twin and the pytest-html extra are read back as a reviewer's tools would read them.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import psutil
import pytest
from signals import sigint_deliverable

from pytest_resilience.chaostoolkit import Runner, load_experiment
from pytest_resilience.report.html_extras import scenario_html
from pytest_resilience.report.journal import EXCERPT_CHARS
from pytest_resilience.report.model import ScenarioResult
from pytest_resilience.report.standalone import build_report_data, write_resilience_report
from pytest_resilience.timeline import FAULT_INJECTED, FAULT_REVERTED, Timeline

DATA = Path(__file__).parents[1] / "chaostoolkit"
TITLE = "Our default language is English"


class _JournalRows(HTMLParser):
    """The rows of every ``rz-journal`` table: (row attributes, cell texts), and captions."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self.captions: list[str] = []
        self._in_table = False
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._in_table = "rz-journal" in values.get("class", "").split()
        elif self._in_table and tag == "caption":
            self._caption = []
        elif self._in_table and tag == "tr" and "head" not in values.get("class", ""):
            self.rows.append((values, []))
        elif self._in_table and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "caption" and self._caption is not None:
            self.captions.append("".join(self._caption).strip())
            self._caption = None
        elif tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._caption):
            if sink is not None:
                sink.append(data)


def _journal_rows(page: str) -> _JournalRows:
    parser = _JournalRows()
    parser.feed(page)
    return parser


def _run(
    pytester: pytest.Pytester, experiment: dict[str, Any], *, errors: int = 0
) -> tuple[str, dict, str]:
    (pytester.path / "scenarios").mkdir()
    shutil.copy(DATA / "services.yaml", pytester.path / "services.yaml")
    (pytester.path / "scenarios" / "default_language.json").write_text(json.dumps(experiment))
    (pytester.path / "scenarios" / "default.locale.txt").write_text("welcome=hello\n")
    # Out of process, as tests/chaostoolkit/test_chaostoolkit.py runs experiments (numpy, requests).
    result = pytester.runpytest_subprocess(
        "--chaos-services=services.yaml",
        "--chaos-ledger=ledger.sqlite",
        "--resilience-report=out/report.html",
        "--html=out/pytest.html",
        "-p",
        "no:cacheprovider",
    )
    # the tutorial's sed makes the file French: deviated; a failed rollback errs at teardown
    result.assert_outcomes(failed=1, errors=errors)
    out = pytester.path / "out"
    (scenario,) = json.loads((out / "report.json").read_text())["scenarios"]
    return (out / "report.html").read_text(), scenario, (out / "pytest.html").read_text()


def _pytest_html_extras(page: str) -> list[str]:
    """The html extras pytest-html keeps for its rows (in the page's ``data-jsonblob``)."""
    blob = re.search(r'data-jsonblob="([^"]*)"', page)
    assert blob is not None
    tests = json.loads(html.unescape(blob[1]))["tests"]
    return [
        extra["content"]
        for reports in tests.values()
        for report in reports
        for extra in report["extras"]
        if extra["format_type"] == "html"
    ]


def _published() -> dict[str, Any]:
    return json.loads((DATA / "default_language.json").read_text())


def test_the_journal_names_each_run_and_the_rollback_that_ran(pytester: pytest.Pytester) -> None:
    page, scenario, pytest_html = _run(pytester, _published())

    rows = _journal_rows(page)
    (caption,) = rows.captions
    assert f"Chaos Toolkit journal: {TITLE}, ended deviated" in caption
    assert "rollbacks: 1 ran: 1 succeeded" in caption
    table = [
        (attrs.get("data-phase"), cells[0], cells[1], cells[4], cells[5])
        for attrs, cells in rows.rows
    ]
    assert table == [
        ("hypothesis-before", "hypothesis before", "lookup-lang-file probe", "succeeded", "met"),
        (
            "hypothesis-before",
            "hypothesis before",
            "lookup-text-in-lang-file probe",
            "succeeded",
            "met",
        ),
        ("method", "method", "switch-language-to-french action", "succeeded", "—"),
        ("hypothesis-after", "hypothesis after", "lookup-lang-file probe", "succeeded", "met"),
        (
            "hypothesis-after",
            "hypothesis after",
            "lookup-text-in-lang-file probe",
            "succeeded",
            "not met",
        ),
        ("rollback", "rollback", "switch-language-back-to-english action", "succeeded", "—"),
    ]
    # the probe's output: grep found no "hello" after the method (exit 1)
    assert rows.rows[4][1][6] == "exit 1"
    assert rows.rows[5][0]["class"] == "rz-rollback"

    journal = scenario["journal"]
    assert (journal["title"], journal["verdict"]) == (TITLE, "deviated")
    assert [(r["activity"], r["status"]) for r in journal["rollbacks"]] == [
        ("switch-language-back-to-english", "succeeded")
    ]
    assert journal["rollbacks_line"] == "1 ran: 1 succeeded"
    assert [r["phase"] for r in journal["runs"]] == [row[0] for row in table]
    for run in journal["runs"]:  # in s from the block's origin (T0: the rollbacks armed)
        assert 0 <= run["started_at"] <= run["ended_at"] < 60
    # the pytest-html extra is the same block
    (extra,) = _pytest_html_extras(pytest_html)
    assert [cells[1] for _, cells in _journal_rows(extra).rows] == [row[2] for row in table]


def test_a_failed_rollback_shows_failed_and_the_next_still_ran(pytester: pytest.Pytester) -> None:
    experiment = _published()
    published_rollback = experiment["rollbacks"][0]
    experiment["rollbacks"] = [
        {  # raises: its tool is not installed (the runner records no end for it)
            "type": "action",
            "name": "restore-from-backup",
            "provider": {"type": "process", "path": "no-such-restore-tool", "arguments": "x"},
        },
        published_rollback,
        {  # ends failed: longer than its timeout
            "type": "action",
            "name": "wait-for-reload",
            "provider": {"type": "process", "path": "sleep", "arguments": ["30"], "timeout": 0.3},
        },
    ]

    # the ledger keeps the failed ones open: the teardown's revert errs (pytest --chaos-cleanup)
    page, scenario, pytest_html = _run(pytester, experiment, errors=1)

    rows = _journal_rows(page)
    rollbacks = [
        (cells[1], cells[4], cells[6])
        for attrs, cells in rows.rows
        if attrs.get("class") == "rz-rollback"
    ]
    assert [(name, status) for name, status, _ in rollbacks] == [
        ("restore-from-backup action", "failed"),
        ("switch-language-back-to-english action", "succeeded"),
        ("wait-for-reload action", "failed"),
    ]
    assert "took longer than its timeout 0.3s" in rollbacks[2][2]
    (caption,) = rows.captions
    assert "rollbacks: 3 ran: 2 failed, 1 succeeded" in caption
    assert (pytester.path / "scenarios" / "default.locale.txt").read_text() == "welcome=hello\n"

    journal = scenario["journal"]
    assert [(r["activity"], r["status"]) for r in journal["rollbacks"]] == [
        ("restore-from-backup", "failed"),
        ("switch-language-back-to-english", "succeeded"),
        ("wait-for-reload", "failed"),
    ]
    assert journal["rollbacks"][2]["ended_at"] is not None
    # the call's report and the teardown error's each carry the block
    for extra in _pytest_html_extras(pytest_html):
        statuses = [cells[4] for attrs, cells in _journal_rows(extra).rows if attrs.get("class")]
        assert statuses == ["failed", "succeeded", "failed"]


def test_a_scenario_without_an_experiment_has_no_journal() -> None:
    clock = iter(float(t) for t in range(1000, 1100))
    timeline = Timeline("kill", clock=lambda: next(clock))
    timeline.mark(FAULT_INJECTED, "pod_kill")
    timeline.mark(FAULT_REVERTED, "pod_kill")
    result = ScenarioResult.from_timeline(
        timeline, nodeid="scenarios/kill.yaml::kill", outcome="passed", duration_s=2.0
    )

    assert result.journal is None
    assert "rz-journal" not in scenario_html(result, include_style=False)
    (scenario,) = build_report_data([result], run_info={})["scenarios"]
    assert "journal" not in scenario


def _run_in_process(path: Path) -> ScenarioResult:
    """The experiment through the runner itself (no ledger: it plays the rollbacks)."""
    timeline = Timeline(TITLE)
    Runner(load_experiment(path), timeline=timeline).run()
    return ScenarioResult.from_timeline(
        timeline, nodeid=f"{path.name}::{TITLE}", outcome="failed", duration_s=1.0
    )


def _noisy_experiment() -> dict[str, Any]:
    experiment = _published()
    experiment["method"].append(
        {  # a step that prints a credential, markup and a long tail
            "type": "action",
            "name": "print-settings",
            "provider": {
                "type": "process",
                "path": "echo",
                "arguments": ["password=hunter2-s3cret", "<b>bold</b>", "x" * 3000],
            },
        }
    )
    return experiment


def test_an_output_excerpt_is_short_escaped_and_masked(tmp_path: Path) -> None:
    path = tmp_path / "default_language.json"
    path.write_text(json.dumps(_noisy_experiment()))
    (tmp_path / "default.locale.txt").write_text("welcome=hello\n")
    result = _run_in_process(path)

    block = scenario_html(result, include_style=False)
    (scenario,) = build_report_data([result], run_info={})["scenarios"]

    assert "hunter2-s3cret" not in block
    assert "hunter2-s3cret" not in json.dumps(scenario)
    assert "<b>bold</b>" not in block
    (row,) = [cells for attrs, cells in _journal_rows(block).rows if "print-settings" in cells[1]]
    excerpt = row[6]
    assert excerpt.startswith("exit 0; stdout: password=[REDACTED] <b>bold</b> xxx")
    assert len(excerpt) <= EXCERPT_CHARS
    (run,) = [r for r in scenario["journal"]["runs"] if r["activity"] == "print-settings"]
    assert run["excerpt"] == excerpt
    # without the ledger, the runner plays the rollbacks itself and records the end
    assert scenario["journal"]["verdict"] == "deviated"
    assert [(r["activity"], r["status"]) for r in scenario["journal"]["rollbacks"]] == [
        ("switch-language-back-to-english", "succeeded")
    ]


@pytest.mark.parametrize("width", [1280, 500])  # table, cards
def test_the_journal_fits_the_window(tmp_path: Path, width: int) -> None:
    from browser import find_chromium, measure_layout

    chromium = find_chromium()
    path = tmp_path / "default_language.json"
    path.write_text(json.dumps(_noisy_experiment()))
    (tmp_path / "default.locale.txt").write_text("welcome=hello\n")
    out = tmp_path / "resilience.html"
    write_resilience_report(out, [_run_in_process(path)], history_dir=None, run_info={})

    layout = measure_layout(chromium, out, tmp_path / "layout", width=width)
    assert layout.overflowing == []
    assert layout.scroll_width <= layout.viewport


def test_an_interrupted_method_shows_interrupted_and_its_rollback(tmp_path: Path) -> None:
    shutil.copy(DATA / "interrupt_mid_method.json", tmp_path)
    locale = tmp_path / "default.locale.txt"
    locale.write_text("welcome=hello\n")
    timeline = Timeline(TITLE)
    runner = Runner(load_experiment(tmp_path / "interrupt_mid_method.json"), timeline=timeline)
    me = psutil.Process()
    holding = threading.Event()

    def ctrl_c_once_held() -> None:  # as a user would: the method's `sleep 300` is running
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not holding.is_set():
            if any(child.name() == "sleep" for child in me.children(recursive=True)):
                holding.set()
                os.kill(me.pid, signal.SIGINT)
                return
            time.sleep(0.05)  # polling the outside world, with a deadline

    watcher = threading.Thread(target=ctrl_c_once_held, daemon=True)
    # a terminal's Ctrl-C: a background job's shell may have left SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher.start()
        with pytest.raises(KeyboardInterrupt):
            runner.run()
        watcher.join(timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    result = ScenarioResult.from_timeline(
        timeline, nodeid="interrupt_mid_method.json::x", outcome="error", duration_s=1.0
    )

    assert holding.is_set()
    journal = result.journal
    assert journal is not None and journal.verdict == "interrupted"
    assert [(r.phase, r.activity, r.status) for r in journal.runs] == [
        ("hypothesis-before", "lookup-text-in-lang-file", "succeeded"),
        ("method", "switch-language-to-french", "succeeded"),
        ("method", "hold", "interrupted"),
        ("rollback", "switch-language-back-to-english", "succeeded"),
    ]
    rows = _journal_rows(scenario_html(result, include_style=False)).rows
    assert [(a.get("data-phase"), c[4]) for a, c in rows][-2:] == [
        ("method", "interrupted"),
        ("rollback", "succeeded"),
    ]
    assert locale.read_text() == "welcome=hello\n"


def test_after_sigterm_mid_method_the_report_shows_it_interrupted_and_rolled_back(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    (project / "scenarios").mkdir(parents=True)
    (project / "pytest.ini").write_text("[pytest]\n")  # own rootdir, none of our config
    shutil.copy(DATA / "services.yaml", project)
    shutil.copy(DATA / "interrupt_mid_method.json", project / "scenarios")
    locale = project / "scenarios" / "default.locale.txt"
    locale.write_text("welcome=hello\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--chaos-services=services.yaml",
            "--chaos-ledger=ledger.sqlite",
            "--resilience-report=out/report.html",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=sigint_deliverable,
    )
    try:
        deadline = time.monotonic() + 60
        while not _holding(proc):  # the method's `sleep 300`, after the switch to French
            assert time.monotonic() < deadline and proc.poll() is None, proc.stdout
            time.sleep(0.1)  # polling the outside world, with a deadline
        assert "bonjour" in locale.read_text()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output.decode(errors="replace")
    (scenario,) = json.loads((project / "out" / "report.json").read_text())["scenarios"]
    journal = scenario["journal"]
    assert journal["verdict"] == "interrupted"
    assert [(r["phase"], r["activity"], r["status"]) for r in journal["runs"]] == [
        ("hypothesis-before", "lookup-text-in-lang-file", "succeeded"),
        ("method", "switch-language-to-french", "succeeded"),
        ("method", "hold", "interrupted"),
        ("rollback", "switch-language-back-to-english", "succeeded"),
    ]
    rows = _journal_rows((project / "out" / "report.html").read_text())
    assert [(a.get("data-phase"), c[4]) for a, c in rows.rows][-2:] == [
        ("method", "interrupted"),
        ("rollback", "succeeded"),
    ]
    assert locale.read_text() == "welcome=hello\n"


def _holding(proc: subprocess.Popen[bytes]) -> bool:
    children = psutil.Process(proc.pid).children(recursive=True)
    return any(child.name() == "sleep" for child in children)
