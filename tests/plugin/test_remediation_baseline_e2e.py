"""--remediation-baseline for real: one pytest session, the scenario with and without the engine.

The project (tests/e2e_projects/baseline) is a tiny HTTP service on the local target, Locust
load, and the engine's High Error Rate playbook narrowed to it: a bad release goes out,
the engine rolls it back; in the [baseline] twin the engine only says it would have, the
error rate never recovers, and the 12 s recovery window censors it. About 50 s on a
2-core machine, shared by every test below (one session, read five ways).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import assert_not_blank, find_chromium, run_chromium

from pytest_resilience import timeline as tl

PROJECT = Path(__file__).parents[1] / "e2e_projects" / "baseline"
WINDOW_S = 12.0  # chaos_release.py: slo.assert_recovers(within_s=12)
AUTOMATED = "chaos_release.py::test_bad_release_rolled_back"
BASELINE = f"{AUTOMATED}[baseline]"


@dataclass(frozen=True)
class Session:
    returncode: int
    output: str
    report: dict[str, Any]
    html: str
    html_path: Path
    junit: ET.ElementTree


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return run_project(tmp_path_factory.mktemp("baseline"), "chaos_release.py")


def run_project(tmp_path: Path, path: str) -> Session:
    """Run ``path`` of a copy of the project with --remediation-baseline; read what it wrote."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    for name in ("services.yaml", "scenarios/release.yaml"):
        file = project / name
        file.write_text(file.read_text().replace("@HERE@", str(project)))
    out = project / "out"
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", path,
            "--remediation-baseline", f"--resilience-report={out / 'resilience.html'}",
            f"--junitxml={out / 'junit.xml'}", f"--chaos-ledger={project / 'ledger.sqlite'}",
        ],
        cwd=project, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    output = done.stdout[-8000:] + done.stderr[-2000:]
    assert (out / "resilience.json").exists(), output
    return Session(
        done.returncode,
        output,
        json.loads((out / "resilience.json").read_text()),
        (out / "resilience.html").read_text(),
        out / "resilience.html",
        ET.parse(out / "junit.xml"),
    )


def scenario(session: Session, nodeid: str) -> dict[str, Any]:
    (found,) = [s for s in session.report["scenarios"] if s["nodeid"] == nodeid]
    return found


def the_pair(session: Session) -> dict[str, Any]:
    (pair,) = session.report["comparison"]["pairs"]
    return pair


def properties_of(session: Session, name: str) -> dict[str, str]:
    (case,) = [c for c in session.junit.iter("testcase") if c.get("name") == name]
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_both_runs_happen_one_after_the_other_and_both_pass(session: Session):
    assert session.returncode == 0, session.output
    assert re.search(r"test_bad_release_rolled_back PASSED.*\n(.*\n)*.*\[baseline\] PASSED",
                     session.output), session.output  # fmt: skip
    automated, baseline = scenario(session, AUTOMATED), scenario(session, BASELINE)
    assert (automated["mode"], automated["twin"]) == ("automated", BASELINE)
    assert (baseline["mode"], baseline["twin"]) == ("baseline", AUTOMATED)
    assert automated["outcome"] == baseline["outcome"] == "passed"
    assert "did not recover within 12 s" in baseline["expected_failure"]
    # the run's own figures are the automated run's: the baseline is not a scenario of it
    assert session.report["summary"]["scenarios"] == 1
    assert "with vs without automation (1 scenario(s) compared)" in session.output


def test_the_baseline_engine_decided_but_acted_on_nothing_and_paged_nobody(session: Session):
    def events(nodeid: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in scenario(session, nodeid)["timeline"]["events"] if e["kind"] == kind]

    (acted,) = events(AUTOMATED, tl.ACTION_FINISHED)
    assert (acted["name"], acted["detail"]["ok"]) == ("rollback", True)
    would = events(BASELINE, tl.ACTION_FINISHED)
    assert would and all(e["detail"]["dry_run"] and not e["detail"]["ok"] for e in would)
    assert events(BASELINE, tl.ALERT_FIRED)  # it still detected
    assert not [e for e in events(BASELINE, tl.ESCALATED) if e["detail"].get("paged")]
    assert scenario(session, BASELINE)["pages_sent"] == 0
    # the bad release was still out when the scenario's own revert came
    (reverted,) = events(BASELINE, tl.FAULT_REVERTED)
    assert reverted["name"] == "bad_deploy"


def test_the_censored_baseline_is_shown_as_such(session: Session):
    without = the_pair(session)["without"]
    assert without["recover"] == {"value": WINDOW_S, "censored": True}, without
    assert without["window_s"] == WINDOW_S and without["observed_s"] >= WINDOW_S
    cell = re.search(r'<td[^>]*data-key="time_to_recover">(.*?)</td>', session.html, re.S)[1]
    assert re.search(r'class="censored" data-side="without">not recovered within 12\.0 s<', cell)
    mttr = re.search(r'<tr data-key="time_to_recover">.*?</tr>', session.html, re.S)[0]
    assert re.search(r'data-side="without" data-at-least="true"[^>]*>≥ 12\.0 s<', mttr)
    assert "which are then lower bounds" in session.html  # the footnote: how means count it
    junit = properties_of(session, "test_bad_release_rolled_back[baseline]")
    assert junit["without.time_to_recover_s"] == "12"
    assert junit["without.time_to_recover_censored"] == "true"
    assert junit["mode"] == "baseline"
    suite = {p.get("name"): p.get("value") for p in session.junit.getroot().iter("property")}
    assert suite["with_without.time_to_recover.without_at_least"] == "true"


def test_every_figure_is_what_the_two_timelines_hold(session: Session):
    pair = the_pair(session)
    for side, nodeid in ((pair["with"], AUTOMATED), (pair["without"], BASELINE)):
        line = tl.Timeline.from_dict(scenario(session, nodeid)["timeline"])
        t0 = line.t0
        ends = [
            line.first(tl.FAULT_REVERTED, since=t0).at,
            line.first(tl.LOAD_STOPPED, since=t0).at,
        ]
        watched = round(min(ends) - t0, 3)
        assert side["observed_s"] == watched
        (window,) = line.events(tl.RECOVERY_WINDOW)
        assert side["window_s"] == window.detail["within_s"] == WINDOW_S
        detected = line.first(tl.ALERT_FIRED, since=t0).at
        assert side["detect"] == {"value": round(detected - t0, 3), "censored": False}
        breaches = [e.at for e in line.events(tl.SLO_BREACHED) if e.name == "error_rate"]
        recoveries = [e.at for e in line.events(tl.SLO_RECOVERED) if e.name == "error_rate"]
        if nodeid == AUTOMATED:
            recovered = recoveries[-1]
            assert side["recover"] == {"value": round(recovered - t0, 3), "censored": False}
            figures = line.figures()  # the timeline's own arithmetic, as the report reads it
            assert figures.healed_by == side["healed_by"] == "engine"
            assert side["mitigate"] == {"value": figures.time_to_mitigate, "censored": False}
            downtime = sum(b - a for a, b in zip(breaches, recoveries, strict=True))
            assert side["downtime"]["value"] == pytest.approx(downtime, abs=0.002)
            assert side["pages"] == 0
        else:
            assert recoveries == [] or recoveries[-1] < breaches[-1]
            assert side["mitigate"] == {"value": WINDOW_S, "censored": True}
            assert side["downtime"]["censored"] is True
            assert side["downtime"]["value"] == pytest.approx(min(ends) - breaches[0], abs=0.002)
            fired = {(e.name, e.detail.get("target")) for e in line.events(tl.ALERT_FIRED)}
            assert side["pages"] == len(fired) >= 1
    rows = {row["key"]: row for row in session.report["comparison"]["rows"]}
    for key, figure in (("time_to_recover", "recover"), ("time_to_detect", "detect")):
        assert rows[key]["with"]["value"] == pair["with"][figure]["value"]  # one pair: its mean
        assert rows[key]["without"]["value"] == pair["without"][figure]["value"]
        assert rows[key]["scenarios"] == [AUTOMATED]
    assert rows["pages"]["avoided"] == pair["pages_avoided"] == pair["without"]["pages"]
    expected = round(100 * (WINDOW_S - pair["with"]["recover"]["value"]) / WINDOW_S, 1)
    assert pair["reduction"]["time_to_recover"] == {"pct": expected, "bound": "at least"}
    suite = {p.get("name"): p.get("value") for p in session.junit.getroot().iter("property")}
    assert (
        float(suite["with_without.time_to_recover.with"])
        == rows["time_to_recover"]["with"]["value"]
    )


_FIRST_SCREEN = """<script>
window.addEventListener("load", function () {
  var box = document.getElementById("with-without").getBoundingClientRect();
  var out = document.createElement("pre");
  out.id = "rz-first-screen";
  out.textContent = JSON.stringify({top: box.top, bottom: box.bottom, right: box.right,
    viewport: document.documentElement.clientWidth});
  document.body.appendChild(out);
});
</script>"""


def test_the_with_without_table_is_on_the_first_screen_in_chromium(session: Session, tmp_path):
    chromium = find_chromium()
    png = tmp_path / "first-screen.png"
    done = run_chromium(chromium, tmp_path / "profile", f"--screenshot={png}",
                        "--window-size=1280,900", session.html_path.as_uri())  # fmt: skip
    assert png.exists(), done.stderr[-2000:]
    assert_not_blank(png, (1280, 900))
    copy = tmp_path / "measured.html"
    copy.write_text(session.html.replace("</body>", _FIRST_SCREEN + "</body>", 1))
    done = run_chromium(chromium, tmp_path / "profile-2", "--window-size=1280,900",
                        "--dump-dom", copy.as_uri())  # fmt: skip
    found = re.search(r'<pre id="rz-first-screen">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    box = json.loads(found[1])
    assert box["top"] > 0 and box["bottom"] <= 900, box  # the whole table without scrolling
    assert box["right"] <= box["viewport"], box


def test_a_yaml_scenario_gets_its_twin_and_its_baseline_is_censored(tmp_path):
    """scenarios/release.yaml reverts its bad release after 10 s: without the engine the
    errors last until then, and what comes after the revert is the scenario's doing, not a
    recovery: censored at the smaller of its 15 s window and the time it was watched."""
    run = run_project(tmp_path, "scenarios/release.yaml")
    assert run.returncode == 0, run.output
    nodeid = "scenarios/release.yaml::release"
    assert [s["nodeid"] for s in run.report["scenarios"]] == [nodeid, f"{nodeid}[baseline]"]
    (pair,) = run.report["comparison"]["pairs"]
    without, with_ = pair["without"], pair["with"]
    line = tl.Timeline.from_dict(scenario(run, f"{nodeid}[baseline]")["timeline"])
    ends = [line.first(kind, since=line.t0).at for kind in (tl.FAULT_REVERTED, tl.LOAD_STOPPED)]
    watched = round(min(ends) - line.t0, 3)
    bound = min(15.0, watched)
    assert (without["window_s"], without["observed_s"]) == (15.0, watched)
    assert without["recover"] == {"value": bound, "censored": True}
    assert without["healed_by"] == "fault_end" and without["mitigate"]["censored"]
    assert with_["healed_by"] == "engine" and not with_["recover"]["censored"]
    assert f"not recovered within {bound:.1f} s" in run.html
