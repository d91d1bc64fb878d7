"""matplotlib's SVG made fit to sit inline, hundreds of times, in one HTML page.

Why a pass of its own: matplotlib writes for a standalone file. Its output for one timeline
chart was 27 KB, and the charts were nine tenths of a 500-scenario report (14.5 MiB). What
it spends the bytes on, and what this pass does about each:

- coordinates with six decimals on a 612 x 317 pt canvas: rounded to one (0.1 pt is a
  twentieth of a pixel at the size the report draws the chart);
- a ``font-family`` list on every label: dropped, so labels take the page's font (the
  legend and tables around the chart use it too);
- a ``<g>`` without attributes around nearly every element: dropped (it does nothing);
- a style on every tick mark's ``<use>`` that repeats its marker's stroke (a tick is a line:
  the fill it adds paints nothing): dropped;
- ``L`` before every point of a path (SVG repeats the last command by itself), the spaces
  after command letters, ``rotate(-0 ...)`` on every label, ``xlink:href`` (``href`` is
  SVG 2, which every current browser reads): dropped.

And for many charts on one page: black becomes ``currentColor`` (the page's text colour,
dark mode and print included), ids that something refers to get a per-chart prefix, and
ids nothing refers to are dropped.
"""

from __future__ import annotations

import io
import itertools
import re
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FOREGROUND", "compact_svg", "figure_svg"]

#: drawn wherever black would be; replaced by currentColor after rendering
FOREGROUND = "#0b0c0d"

_ids = itertools.count(1)
_ids_lock = threading.Lock()

_SVG_START = re.compile(r"<svg\b")
_ID = re.compile(r' id="([^"]+)"')
_REFERENCE = re.compile(r'(?:url\(#|href="#)([^)"]+)')
_REFERENCE_ATTR = re.compile(r'(url\(#|href="#)([^)"]+)')
_WHITESPACE = re.compile(r"\s+")
_DEFS_STYLE = re.compile(r"<defs>\s*<style[^>]*>.*?</style>\s*</defs>", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)
#: a number with more decimals than the drawing needs (opacities are left alone)
_LONG_NUMBER = re.compile(r"(?<!opacity: )(?<![\d.])-?\d+\.\d{2,}")
_FONT_FAMILY = re.compile(r"font-family: [^;\"]*(; )?")
_NO_ROTATION = re.compile(r' transform="rotate\(-?0 [^)]*\)"')
_GROUP = re.compile(r"(<g>|<g [^>]*>|</g>)")
_PATH_DATA = re.compile(r' d="([^"]*)"')
_PATH_TOKEN = re.compile(r"[A-Za-z]|-?[\d.]+")
#: a marker that is one straight segment from its origin: a tick mark
_LINE_MARKER = re.compile(r'<path id="([^"]+)" d="M0 0L-?[\d.]+ -?[\d.]+" style="stroke: ')
_USE_STYLE = re.compile(r'(<use href="#([^"]+)"[^>]*?) style="[^"]*"')


def figure_svg(fig: Figure, label: str) -> str:
    """``fig`` as compact inline SVG, with ``label`` for screen readers."""
    buffer = io.StringIO()
    fig.savefig(
        buffer,
        format="svg",
        transparent=True,
        metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
    )
    svg = compact_svg(buffer.getvalue())
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="rz-svg" ', 1)


def compact_svg(svg: str) -> str:
    """matplotlib's SVG document as a compact fragment (see the module docstring)."""
    start = _SVG_START.search(svg)
    if start is None:
        raise ValueError(f"no <svg> element in matplotlib's output: {svg[:200]!r}")
    svg = svg[start.start() :]
    svg = _METADATA.sub("", _DEFS_STYLE.sub("", svg, count=1))
    svg = svg.replace(FOREGROUND, "currentColor")
    svg = _LONG_NUMBER.sub(_round, svg)
    svg = _FONT_FAMILY.sub("", svg)
    svg = _NO_ROTATION.sub("", svg)
    svg = svg.replace("xlink:href=", "href=")
    svg = _PATH_DATA.sub(lambda m: f' d="{_path_data(m[1])}"', svg)
    svg = svg.replace(' xmlns:xlink="http://www.w3.org/1999/xlink"', "", 1)
    svg = _WHITESPACE.sub(" ", svg).replace("> <", "><")
    # Many charts share one page: ids that something refers to (clip paths, tick markers)
    # get a per-chart prefix; matplotlib's other ids (one per group) are dropped as bloat.
    with _ids_lock:
        prefix = f"rz{next(_ids)}-"
    referenced = set(_REFERENCE.findall(svg))
    svg = _ID.sub(lambda m: f' id="{prefix}{m[1]}"' if m[1] in referenced else "", svg)
    svg = _REFERENCE_ATTR.sub(lambda m: f"{m[1]}{prefix}{m[2]}", svg)
    svg = _drop_bare_groups(svg)
    ticks = set(_LINE_MARKER.findall(svg))
    return _USE_STYLE.sub(lambda m: m[1] if m[2] in ticks else m[0], svg)


def _round(match: re.Match[str]) -> str:
    text = f"{float(match[0]):.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _path_data(data: str) -> str:
    """``M 1 2 L 3 4 L 5 6 z`` as ``M1 2L3 4 5 6z``: the same path, a letter per change."""
    out: list[str] = []
    last = ""
    for token in _PATH_TOKEN.findall(data):
        if token.isalpha():
            if token != last or token in "Mm":
                out.append(token)
            last = token
        elif out and not out[-1].isalpha():
            out.append(" " + token)
        else:
            out.append(token)
    return "".join(out)


def _drop_bare_groups(svg: str) -> str:
    """Every ``<g>`` without attributes, with its own ``</g>``; groups that style stay."""
    out: list[str] = []
    kept: list[bool] = []
    for part in _GROUP.split(svg):
        if part == "<g>":
            kept.append(False)
        elif part.startswith("<g "):
            kept.append(True)
            out.append(part)
        elif part == "</g>":
            if kept.pop():
                out.append(part)
        else:
            out.append(part)
    return "".join(out)
