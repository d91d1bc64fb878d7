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


#: appended to a copy of the page: what overflows the viewport or its container, and the
#: smallest text, written where --dump-dom shows it (every <details> opened first, as
#: "Expand all" and printing do)
_MEASURE = """<script>
window.addEventListener("load", function () {
  var boxes = {};  // where each section and table lies as the page opens, details as they are
  document.querySelectorAll("section[id], table[id], ul[id]").forEach(function (el) {
    var box = el.getBoundingClientRect();
    boxes[el.id] = [Math.round(box.top + window.scrollY), Math.round(box.bottom + window.scrollY)];
  });
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var width = document.documentElement.clientWidth, wide = [], sticking = [], small = [];
  function name(el) {
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
      (el.className && el.className.baseVal === undefined ? "." + el.className : "");
  }
  function over(el) {
    var box = el.getBoundingClientRect();
    return box.width > 0 && box.right > width + 0.5;
  }
  // inside a box that scrolls sideways (a chart on a narrow window) is not outside the page
  function scrolled(el) {
    for (var up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      var x = getComputedStyle(up).overflowX;
      if (x === "auto" || x === "scroll") { return true; }
    }
    return false;
  }
  document.querySelectorAll("body *").forEach(function (el) {
    var box = el.getBoundingClientRect();
    if (box.width === 0 || el.id === "rz-layout") { return; }
    if (over(el) && !scrolled(el) && !(el.parentElement && over(el.parentElement))) {
      wide.push(name(el) + " right=" + Math.round(box.right));
    }
    var parent = el.parentElement, outer = parent && parent.getBoundingClientRect();
    if (outer && parent !== document.body && !scrolled(el) &&
        box.right > outer.right + 0.5 && getComputedStyle(el).position !== "absolute") {
      sticking.push(name(el) + " " + Math.round(box.width) + " in " + name(parent) + " " +
                    Math.round(outer.width));
    }
    var text = Array.prototype.some.call(el.childNodes, function (n) {
      return n.nodeType === 3 && n.textContent.trim() !== "";
    });
    if (!text) { return; }
    var px = parseFloat(getComputedStyle(el).fontSize);
    if (el instanceof SVGElement) {  // as drawn: font-size in user units times the scale
      var m = el.getScreenCTM();
      px = px * Math.sqrt(m.a * m.a + m.b * m.b);
    }
    small.push([Math.round(px * 10) / 10, (el instanceof SVGElement ? "svg " : "") + name(el) +
                " '" + el.textContent.trim().slice(0, 30) + "'"]);
  });
  small.sort(function (a, b) { return a[0] - b[0]; });
  var html = small.filter(function (s) { return s[1].indexOf("svg ") !== 0; });
  var svg = small.filter(function (s) { return s[1].indexOf("svg ") === 0; });
  var out = document.createElement("pre");
  out.id = "rz-layout";
  out.textContent = JSON.stringify({viewport: width,
    scroll_width: document.documentElement.scrollWidth, overflowing: wide.slice(0, 20),
    past_container: sticking.slice(0, 20),
    smallest_text: html.slice(0, 5), smallest_chart_text: svg.slice(0, 5), boxes: boxes});
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
    #: elements whose right edge is past their parent's (outside boxes that scroll sideways)
    past_container: list[str]
    #: the five smallest font sizes of text on the page, in px: [size, "tag#id 'text'"]
    smallest_text: list[tuple[float, str]]
    #: the same for chart labels, as drawn (the SVG's font size times its scale)
    smallest_chart_text: list[tuple[float, str]]
    #: [top, bottom] in px of each section, table and list with an id, as the page opens
    boxes: dict[str, list[int]]


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


def screenshot_section(
    chromium: str, page: Path, work: Path, section: str, *, width: int, height: int
) -> Path:
    """A PNG of ``section`` (an element id) of ``page`` alone at the top of the window.

    Everything else in the body is hidden in a copy of the page, so the shot shows the
    section as it lays out at ``width``, from its heading down ``height`` px.
    """
    work.mkdir(parents=True, exist_ok=True)
    copy = work / f"{section}-{width}.html"
    alone = f"<style>body > :not(#{section}) {{ display: none !important; }}</style></head>"
    copy.write_text(page.read_text(encoding="utf-8").replace("</head>", alone, 1), "utf-8")
    png = work / f"{section}-{width}.png"
    done = run_chromium(
        chromium,
        work / f"profile-{section}-{width}",
        f"--screenshot={png}",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        copy.as_uri(),
    )
    assert png.exists(), f"chromium wrote no screenshot of #{section}: {done.stderr[-2000:]}"
    return png
