"""The standalone report in a real browser: headless Chromium, file:// URL, no network.

Chromium missing: a failure under CI (the report must be proven to render there), a skip
on a laptop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not found on PATH: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def report(tmp_path):
    results = [
        sample_result(0, healed_by="engine", recover_after=12),
        sample_result(1, healed_by="platform", recover_after=20),
        sample_result(2, healed_by="none", recover_after=None, pages=1),
    ]
    out = tmp_path / "resilience.html"
    write_resilience_report(out, results, history_dir=None, run_info={"target": "local"})
    return out


def run_chromium(chromium: str, profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_screenshot_is_not_blank(chromium, report, tmp_path):
    png = tmp_path / "shot.png"
    done = run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        report.as_uri(),
    )
    assert png.exists(), f"chromium wrote no screenshot: {done.stderr[-2000:]}"
    try:
        from PIL import Image, ImageStat
    except ImportError:  # no Pillow: a blank 1280x2000 PNG compresses to a few kB
        assert png.stat().st_size > 30_000
        return
    with Image.open(png) as image:
        assert image.size == (1280, 2000)
        stats = ImageStat.Stat(image.convert("L"))
        assert stats.stddev[0] > 10, "the screenshot is (nearly) one colour"
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is None or len(colours) > 50


class _SummaryTable(HTMLParser):
    """The cells of <table id="summary"> and <table id="metrics"> by their data-key."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag, attrs):
        self._key = dict(attrs).get("data-key") if tag == "td" else self._key

    def handle_endtag(self, tag):
        if tag == "td":
            self._key = None

    def handle_data(self, data):
        if self._key:
            self.values[self._key] = self.values.get(self._key, "") + data.strip()


def test_dumped_dom_holds_the_runs_figures(chromium, report, tmp_path):
    done = run_chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    parser = _SummaryTable()
    parser.feed(done.stdout)
    assert parser.values["scenarios"] == "3"
    assert parser.values["passed"] == "2"
    assert parser.values["failed"] == "1"
    assert parser.values["mean_time_to_detect_s"] == "4.5 s"
    assert parser.values["mean_time_to_recover_s"] == "16.0 s"
    assert parser.values["auto_remediation_rate"] == "33%"
    assert parser.values["pages_sent"] == "1"
    assert 'id="score-formula"' in done.stdout
