"""Headless Chromium for report checks: the flags this machine needs, and a DOM reader.

Chromium missing: a failure under CI (the report must be proven to render there), a skip
on a laptop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

# Without the background-networking flags Chromium keeps dialling Google's hosts, which
# this machine's closed network refuses; the report itself must need no network at all.
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


def find_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium not found on PATH: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def assert_not_blank(png: Path, size: tuple[int, int]) -> None:
    try:
        from PIL import Image, ImageStat
    except ImportError:  # no Pillow: a blank PNG of this size compresses to a few kB
        assert png.stat().st_size > 30_000
        return
    with Image.open(png) as image:
        assert image.size == size
        stats = ImageStat.Stat(image.convert("L"))
        assert stats.stddev[0] > 10, "the screenshot is (nearly) one colour"
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is None or len(colours) > 50


class SummaryTable(HTMLParser):
    """The cells of the report's summary and metrics tables, by their data-key."""

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
