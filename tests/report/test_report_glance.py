"""The standalone report read at a glance: the first screen, folded passes, compact charts,
and the page as headless Chromium lays it out at a laptop's width and a phone's.

Chromium missing: a failure under CI (the report must be proven to render there), a skip
on a laptop. The screenshots land in the test's tmp_path (``RZ_SHOTS=DIR`` copies them
there too, to look at).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from browser import assert_not_blank, measure_layout, screenshot_section

from pytest_resilience.report.charts import timeline_chart_svg
from pytest_resilience.report.model import ScenarioResult
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

#: healed_by of the automated runs; "none" fails (never recovers), the rest pass
KINDS = ("engine", "platform", "engine", "none", "fault_end", "engine", "none", "engine")
SECTIONS = (
    "with-without-section",
    "failed-section",
    "run-summary",
    "with-without-scenarios-section",
    "metrics-section",
    "strategies-section",
    "trend-section",
    "scenarios-section",
)
#: headless Chromium opens no window narrower than 500 px
LAPTOP, PHONE = (1280, 800), (500, 900)


def _results(kinds: tuple[str, ...] = KINDS) -> list[ScenarioResult]:
    """Each automated run, followed by its baseline twin when the engine healed it."""
    results = []
    for index, kind in enumerate(kinds):
        recover = None if kind == "none" else 9 + 2 * index
        results.append(sample_result(index, healed_by=kind, recover_after=recover, pages=0))
        if kind == "engine":
            results.append(
                sample_result(index, healed_by="none", recover_after=None, baseline=True)
            )
    return results


@pytest.fixture
def report(tmp_path: Path) -> Path:
    """A run with baselines, failures and one earlier run in the history (for the trend)."""
    out, history = tmp_path / "resilience.html", tmp_path / "history"
    run_info = {"target": "local"}
    write_resilience_report(out, _results(KINDS[:5]), history_dir=history, run_info=run_info)
    write_resilience_report(out, _results(), history_dir=history, run_info=run_info)
    return out


def _details(page: str) -> dict[str, str]:
    """Each scenario block's opening tag, by its anchor."""
    return {
        m["id"]: m[0]
        for m in re.finditer(r'<details class="scenario" id="(?P<id>[^"]+)"[^>]*>', page)
    }


def test_the_first_screen_has_the_comparison_then_the_failed_scenarios(report: Path):
    page = report.read_text()
    order = [
        page.index('id="with-without"'),
        page.index('id="failed-scenarios"'),
        page.index('id="run-summary"'),
        page.index('id="with-without-scenarios"'),
        page.index('id="scenarios-section"'),
    ]
    assert order == sorted(order)
    failed = re.search(r'<ul id="failed-scenarios".*?</ul>', page, re.S)[0]
    links = re.findall(r'<a class="id" href="#([^"]+)">', failed)
    assert len(links) == KINDS.count("none") == 2
    blocks = _details(page)
    assert all(" open" in blocks[anchor] for anchor in links)  # the link lands on an open block
    assert "SLO error-rate violated" in failed and "not recovered" in failed
    assert 'id="failed-count">2 of ' in page


def test_a_run_without_failures_says_so_on_its_first_screen(tmp_path: Path):
    out = tmp_path / "r.html"
    write_resilience_report(out, _results(("engine", "platform")), history_dir=None, run_info={})
    page = out.read_text()
    assert 'id="none-failed"' in page and 'id="failed-scenarios"' not in page
    assert page.index('id="failed-section"') < page.index('id="run-summary"')


def test_more_than_ten_failures_fold_after_the_tenth(tmp_path: Path):
    out = tmp_path / "r.html"
    write_resilience_report(out, _results(("none",) * 13), history_dir=None, run_info={})
    page = out.read_text()
    shown = re.search(r'<ul id="failed-scenarios".*?</ul>', page, re.S)[0]
    assert shown.count("<li ") == 10
    assert '<details id="failed-more"><summary>3 more failed</summary>' in page


def test_passed_scenarios_are_folded_and_failed_ones_open(report: Path):
    page = report.read_text()
    blocks = _details(page)
    outcome = {
        m["id"]: m["outcome"]
        for m in re.finditer(
            r'<details class="scenario" id="(?P<id>[^"]+)"[^>]*>\s*<summary>.*? — (?P<outcome>\w+)',
            page,
        )
    }
    assert set(outcome.values()) == {"passed", "failed"}
    for anchor, tag in blocks.items():
        assert (" open" in tag) == (outcome[anchor] == "failed"), tag


def test_each_chart_is_on_the_page_once(report: Path):
    """No scenario's detail twice: one timeline chart per scenario, plus the trend chart."""
    page = report.read_text()
    scenarios = len(_details(page))
    assert scenarios == len(_results())
    assert page.count("<svg ") == scenarios + 1
    assert page.count('aria-label="timeline of') == scenarios


def test_a_chart_carries_no_digits_or_markup_that_draw_nothing():
    svg = timeline_chart_svg(sample_result(7, healed_by="engine", recover_after=12))
    assert re.findall(r"\d+\.\d{2,}", svg.replace("opacity: 0.", "")) == []  # 0.1 pt is enough
    assert "font-family" not in svg  # labels take the page's font
    assert "<g>" not in svg  # a group without attributes does nothing
    assert " L " not in svg and "xlink:href" not in svg
    assert len(svg) < 16_000  # 27 kB before: 9/10 of a 500-scenario report


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_in_chromium_it_fits_the_window_and_its_text_is_readable(
    chromium: str, report: Path, tmp_path: Path, size: tuple[int, int]
):
    width, height = size
    layout = measure_layout(chromium, report, tmp_path / "layout", width=width)
    assert layout.scroll_width <= layout.viewport <= width
    assert layout.overflowing == []
    assert layout.past_container == []
    assert layout.smallest_text[0][0] >= 12, layout.smallest_text
    assert layout.smallest_chart_text[0][0] >= 9, layout.smallest_chart_text
    if width == LAPTOP[0]:  # the first screen holds the comparison and the failures
        assert layout.boxes["with-without"][1] <= height
        assert layout.boxes["failed-scenarios"][1] <= height


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_in_chromium_each_section_renders(
    chromium: str, report: Path, tmp_path: Path, size: tuple[int, int]
):
    width, height = size
    shots = tmp_path / "shots"
    for section in SECTIONS:
        png = screenshot_section(chromium, report, shots, section, width=width, height=height)
        assert_not_blank(png, size)
    keep = os.environ.get("RZ_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
