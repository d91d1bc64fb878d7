"""Headless Chromium for report checks: the flags this machine needs, and a DOM reader.

Chromium missing: a failure under CI (the report must be proven to render there), a skip
on a laptop.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
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


#: appended to a copy of the page: what overflows the viewport, written where --dump-dom shows it
#: (every <details> opened first, as "Expand all" and printing do)
_MEASURE = """<script>
window.addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var width = document.documentElement.clientWidth, wide = [];
  function over(el) {
    var box = el.getBoundingClientRect();
    return box.width > 0 && box.right > width + 0.5;
  }
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.getBoundingClientRect();
    if (over(el) && !(el.parentElement && over(el.parentElement))) {  // outermost only
      wide.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
                (el.className && el.className.baseVal === undefined ? "." + el.className : "") +
                " right=" + Math.round(box.right));
    }
  });
  var out = document.createElement("pre");
  out.id = "rz-layout";
  out.textContent = JSON.stringify({viewport: width,
    scroll_width: document.documentElement.scrollWidth, overflowing: wide.slice(0, 20)});
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class Layout:
    """How a page lays out at one window width, as Chromium measured it."""

    viewport: int
    scroll_width: int
    #: the outermost elements whose right edge is past the viewport (tag#id.class right=px)
    overflowing: list[str]


def measure_layout(chromium: str, page: Path, work: Path, *, width: int) -> Layout:
    """Load a copy of ``page`` at ``width`` px with a measuring script, and read the result.

    The copy sits beside a fresh profile under ``work``; the page itself is not changed.
    Every ``<details>`` is opened before measuring, so folded scenario blocks count too.
    """
    work.mkdir(parents=True, exist_ok=True)
    copy = work / f"measure-{width}.html"
    text = page.read_text(encoding="utf-8")
    copy.write_text(text.replace("</body>", _MEASURE + "</body>", 1), encoding="utf-8")
    done = run_chromium(
        chromium,
        work / f"profile-{width}",
        f"--window-size={width},900",
        "--dump-dom",
        copy.as_uri(),
    )
    found = re.search(r'<pre id="rz-layout">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium gave no measurement: {done.stderr[-2000:]}"
    return Layout(**json.loads(html.unescape(found[1])))
