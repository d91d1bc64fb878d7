"""The spine end to end: README command (a), a failing scenario, and bad input.

Every test here starts a real pytest session in a subprocess, against real processes
(the bundled demo or a tiny HTTP service), and reads only what a user would read: the
exit code, the terminal output, the resilience JSON, the pytest-html file, the ledger
and ``iptables -S``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from browser import SummaryTable, assert_not_blank, find_chromium, run_chromium

from pytest_resilience.faults import iptables
from pytest_resilience.ledger import Ledger

REPO = Path(__file__).resolve().parents[2]
PROJECTS = Path(__file__).parents[1] / "e2e_projects"
RUN_TIMEOUT_S = 240.0
GONE_TIMEOUT_S = 15.0
FAULT_ORDER = ("fault_injected", "pod_died", "pod_ready", "fault_reverted")
NETWORK_OK = os.geteuid() == 0 and shutil.which("iptables") is not None


@dataclass
class Session:
    """A finished pytest subprocess and every process it started while it ran."""

    returncode: int
    output: str
    descendants: list[psutil.Process] = field(default_factory=list)

    def assert_no_process_left(self) -> None:
        _, alive = psutil.wait_procs(self.descendants, timeout=GONE_TIMEOUT_S)
        assert not alive, [(p.pid, p.cmdline()) for p in alive if p.is_running()]


def run_pytest(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Session:
    """Run pytest in ``cwd``; note each process it spawns (pods, Locust) while it runs."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    seen: dict[int, psutil.Process] = {}
    with subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        # The output goes to a pipe read at the end: keep it from filling up meanwhile.
        reader = _Drain(proc)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        parent = psutil.Process(proc.pid)
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{' '.join(command)} ran longer than {RUN_TIMEOUT_S:g} s")
            try:
                for child in parent.children(recursive=True):
                    seen.setdefault(child.pid, child)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)  # sampling period of the process tree, not a synchronisation
        output = reader.text()
    return Session(proc.returncode, output, list(seen.values()))


class _Drain:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._chunks: list[bytes] = []
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self._stream.read(65536), b""):
            self._chunks.append(chunk)

    def text(self) -> str:
        self._thread.join(timeout=30)
        return b"".join(self._chunks).decode(errors="replace")


def _copy_project(name: str, tmp_path: Path) -> Path:
    project = tmp_path / name
    shutil.copytree(PROJECTS / name, project)
    return project


def _open_entries(path: Path) -> list[Any]:
    ledger = Ledger(path)
    try:
        return ledger.open_entries(include_live_owners=True)
    finally:
        ledger.close_db()


# -- (a) the main job ---------------------------------------------------------------------


def test_readme_command_a_runs_the_scenarios_and_writes_both_reports(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    ledger = tmp_path / "ledger.sqlite"  # not the repo's: other sessions may share that one
    # README command (a), narrowed to the two pod-kill scenarios (-k): the others
    # (remediation, latency, database) have end-to-end tests of their own.
    session = run_pytest(
        REPO,
        "-m",
        "chaos",
        "scenarios/",
        "-k",
        "pod_kill",
        f"--resilience-report={reports / 'resilience.html'}",
        f"--html={reports / 'pytest.html'}",
        "--self-contained-html",
        f"--junitxml={reports / 'junit.xml'}",
        f"--chaos-ledger={ledger}",
        env=PLANTED_SECRETS,
    )

    assert session.returncode == 0, session.output
    assert "2 passed" in session.output, session.output
    # live phase lines reach the console through output capture
    assert re.search(r"\[chaos\]\s+T\+0\.0s\s+inject fault\s+pod_kill", session.output)
    assert "revert fault" in session.output
    data = json.loads((reports / "resilience.json").read_text())
    scenarios = {s["nodeid"]: s for s in data["scenarios"]}
    assert set(scenarios) == {
        "scenarios/pod_kill_api.yaml::pod_kill_api",
        "scenarios/test_pod_kill.py::test_api_survives_losing_a_replica",
    }
    for nodeid, scenario in scenarios.items():
        kinds = [e["kind"] for e in scenario["timeline"]["events"]]
        assert _in_order(kinds, FAULT_ORDER), (nodeid, kinds)
        assert scenario["figures"]["time_to_recover"] is not None, nodeid
        verdicts = scenario["slo_verdicts"]
        assert {v["name"] for v in verdicts} == {"error_rate", "p99_latency"}, nodeid
        assert all(v["held"] for v in verdicts), (nodeid, verdicts)
    assert (reports / "resilience.html").stat().st_size > 0

    extras = _pytest_html_extras(reports / "pytest.html")
    assert set(extras) == set(scenarios)
    for nodeid, blocks in extras.items():
        (block,) = [b for b in blocks if f'data-nodeid="{nodeid}"' in b]
        assert "<svg" in block, nodeid  # the timeline chart
        assert 'data-figure="time_to_recover"' in block, nodeid
        assert "violated" not in block and ">held<" in block, nodeid

    assert _open_entries(ledger) == []
    session.assert_no_process_left()

    assert 'name="time_to_recover_s"' in (reports / "junit.xml").read_text()
    _check_in_chromium(reports / "resilience.html", data, tmp_path)


def test_planted_secrets_reach_no_report(tmp_path: Path) -> None:
    """Secrets in the environment, written by a test onto its timeline, its JUnit
    properties and its failure message: none reaches the HTML, JSON or JUnit files."""
    project = _copy_project("secrets", tmp_path)
    reports = tmp_path / "reports"
    session = run_pytest(
        project,
        "chaos_secrets.py",
        "--chaos-services=services.yaml",
        f"--chaos-ledger={tmp_path / 'ledger.sqlite'}",
        f"--resilience-report={reports / 'resilience.html'}",
        f"--html={reports / 'pytest.html'}",
        "--self-contained-html",
        f"--junitxml={reports / 'junit.xml'}",
        env=PLANTED_SECRETS,
    )
    assert session.returncode == pytest.ExitCode.TESTS_FAILED, session.output
    written = sorted(p.name for p in reports.iterdir())
    assert written == ["junit.xml", "pytest.html", "resilience.html", "resilience.json"]
    for path in reports.iterdir():
        text = path.read_text(errors="replace")
        for secret in PLANTED_SECRETS.values():
            assert secret not in text, f"{secret!r} leaked into {path.name}"
    assert "[REDACTED]" in (reports / "resilience.json").read_text()


# Planted where a team keeps them: a pager key and a password in the environment.
PLANTED_SECRETS = {
    "PAGERDUTY_ROUTING_KEY": "pdkey-e2e-5b0c9d1f2a7e4c3b",
    "DEMO_ADMIN_PASSWORD": "hunter2-e2e-0f9e8d7c",
}


def _check_in_chromium(report: Path, data: dict[str, Any], tmp_path: Path) -> None:
    """The real run's report, offline in headless Chromium: it renders, and holds the run."""
    chromium = find_chromium()
    text = report.read_text()
    assert not re.search(r"""(?:src|href)=["']https?://""", text), "the report loads remote files"
    png = tmp_path / "report.png"
    shot = run_chromium(chromium, tmp_path / "profile", f"--screenshot={png}",
                        "--window-size=1280,1600", report.as_uri())  # fmt: skip
    assert png.exists(), shot.stderr[-2000:]
    assert_not_blank(png, (1280, 1600))
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri())
    table = SummaryTable()
    table.feed(dom.stdout)
    assert table.values["scenarios"] == str(len(data["scenarios"]))
    assert table.values["passed"] == str(len(data["scenarios"]))
    assert table.values["pages_sent"] == "0"
    assert dom.stdout.count("<svg") >= len(data["scenarios"])  # a chart per scenario


def _in_order(kinds: list[str], wanted: tuple[str, ...]) -> bool:
    """Whether ``wanted`` occurs in ``kinds`` as a subsequence (others may interleave)."""
    remaining = iter(kinds)
    return all(kind in remaining for kind in wanted)


def _pytest_html_extras(path: Path) -> dict[str, list[str]]:
    """The html extras per test id, from pytest-html's embedded JSON data blob."""
    blob = re.search(r'data-jsonblob="([^"]*)"', path.read_text())
    assert blob, f"{path} has no pytest-html data blob"
    tests = json.loads(html.unescape(blob.group(1)))["tests"]
    return {
        nodeid: [
            extra["content"]
            for report in reports
            for extra in report.get("extras", [])
            if extra.get("format_type") == "html"
        ]
        for nodeid, reports in tests.items()
    }


# -- a scenario that fails --------------------------------------------------------------------


def test_failing_scenarios_name_the_slo_and_still_revert(tmp_path: Path) -> None:
    project = _copy_project("slo_fails", tmp_path)
    ledger = tmp_path / "ledger.sqlite"
    scenarios = ["scenarios/impossible_latency.yaml"]
    if NETWORK_OK:  # the fault held while its SLO breaks is a network_block
        scenarios.append("scenarios/blocked_api.yaml")

    session = run_pytest(project, *scenarios, f"--chaos-ledger={ledger}")

    out = session.output
    assert session.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert f"{len(scenarios)} failed" in out, out
    # Steady state first: an SLO that cannot hold fails before anything is broken.
    assert re.search(
        r"SLO 'p99_latency' \(p99 latency <= 0\.001 ms over 2 s\) did not hold: "
        r"worst [0-9.]+ ?ms at \+[0-9.]+ s from start",
        out,
    ), out
    if NETWORK_OK:
        # While the API is cut off: the error-rate SLO, its worst value, and when.
        assert re.search(
            r"SLO 'error_rate' \(error rate <= 1\.00% over 2 s\) did not hold: "
            r"worst [0-9.]+% at T0\+[0-9.]+ ?s",
            out,
        ), out
    assert "Traceback" not in out and "pytest_resilience/" not in out, out

    entries = _open_entries(ledger)
    assert entries == [], entries
    ledger_db = Ledger(ledger)
    try:
        if NETWORK_OK:
            (block,) = [ledger_db.get(1)]
            assert (block.kind, block.outcome) == ("network_block", "reverted")
            assert not iptables.rules_of(block.spec["chain"])
    finally:
        ledger_db.close_db()
    session.assert_no_process_left()


# -- bad input ---------------------------------------------------------------------------------


def _bad_input(tmp_path: Path, *args: str) -> Session:
    project = _copy_project("bad_input", tmp_path)
    session = run_pytest(project, *args, f"--chaos-ledger={tmp_path / 'ledger.sqlite'}")
    assert "Traceback" not in session.output, session.output
    assert "pytest_resilience/" not in session.output, session.output  # no plugin frames
    session.assert_no_process_left()
    return session


def test_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    session = _bad_input(tmp_path, "chaos_target_up.py", "--chaos-target=nope")

    assert session.returncode == pytest.ExitCode.USAGE_ERROR, session.output
    assert (
        "--chaos-target='nope' is not a known target; use one of: local, kubernetes"
        in session.output
    )


def test_malformed_services_file_names_file_and_field(tmp_path: Path) -> None:
    session = _bad_input(tmp_path, "chaos_target_up.py", "--chaos-services=services_malformed.yaml")

    assert session.returncode == pytest.ExitCode.TESTS_FAILED, session.output
    for test in ("test_first", "test_second"):
        assert f"ERROR at setup of {test}" in session.output, session.output
    assert re.search(
        r"services_malformed\.yaml, field 'services\[0\]\.replicas': .*'three' \(line 4\)",
        session.output,
    ), session.output
    assert "During handling of the above exception" not in session.output


def test_selector_matching_no_pod_fails_clearly(tmp_path: Path) -> None:
    session = _bad_input(tmp_path, "chaos_selector.py", "--chaos-services=services_ok.yaml")

    assert session.returncode == pytest.ExitCode.TESTS_FAILED, session.output
    assert (
        "chaos_selector.py:10: SelectorMatchedNothing: pod_kill: no ready pod matches "
        "selector 'app=nope'" in session.output
    ), session.output


def test_service_that_cannot_start_fails_the_chaos_tests_with_its_stderr(tmp_path: Path) -> None:
    session = _bad_input(tmp_path, "chaos_target_up.py", "--chaos-services=services_crash.yaml")

    out = session.output
    assert session.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "2 errors" in out, out
    for test in ("test_first", "test_second"):
        assert f"ERROR at setup of {test}" in out, out
    assert "chaos target did not start: service 'crashy' failed to start" in out, out
    assert out.count("crashy: cannot open /etc/crashy.conf") >= 2, out  # the pod's stderr
