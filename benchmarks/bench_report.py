"""Time and size of the resilience report for a big run: 500 chaos tests, 60 s of 1 Hz load.

    python benchmarks/bench_report.py [--scenarios 500]

Prints the time and size of every html extra (one per test, drawn at each test's teardown)
and of the standalone report with its JSON twin, once with the charts already drawn for
the extras (what a pytest run does) and once cold; the baseline is writing the same
results as plain JSON in the same run, so the ratios travel between machines.

Then the reader's side: headless Chromium (tests/browser.py's flags) opens the report and
the page's own Navigation Timing says when its DOM was ready and its load event came; the
process's wall time is printed beside that of a blank page, Chromium's start-up being most
of it. No Chromium on PATH: that line says so and the rest stands.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pytest_resilience.report.charts import clear_chart_cache
from pytest_resilience.report.html_extras import html_extras
from pytest_resilience.report.sample import sample_result
from pytest_resilience.report.standalone import write_resilience_report

KINDS = ("engine", "engine", "platform", "fault_end", "none")
TESTS = Path(__file__).resolve().parents[1] / "tests"
# written from the load event: loadEventEnd is still 0 inside its own handler
_TIMING = """<script>addEventListener("load", () => {
  const nav = performance.getEntriesByType("navigation")[0];
  const out = document.createElement("pre"); out.id = "bench-timing";
  out.textContent = JSON.stringify({dom_ready_ms: nav.domContentLoadedEventEnd,
    load_ms: nav.loadEventStart, nodes: document.getElementsByTagName("*").length});
  document.body.appendChild(out);
});</script>"""


def chromium_load(report: Path, work: Path) -> str:
    """One line: the report's load in headless Chromium (navigation timing, wall time)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "chromium page load: skipped (no chromium on PATH; apt-get install chromium)"
    sys.path.insert(0, str(TESTS))
    from browser import run_chromium  # the flags this machine needs (no background network)

    copy = work / "timed.html"
    copy.write_text(
        report.read_text(encoding="utf-8").replace("</body>", _TIMING + "</body>", 1),
        encoding="utf-8",
    )
    blank = work / "blank.html"
    blank.write_text("<!doctype html><title>blank</title><body></body>", encoding="utf-8")
    walls = {}
    out = ""
    for name, page in (("blank", blank), ("report", copy)):
        started = time.perf_counter()
        done = run_chromium(
            chromium,
            work / f"profile-{name}",
            "--window-size=1280,900",
            "--dump-dom",
            page.as_uri(),
        )
        walls[name] = time.perf_counter() - started
        out = done.stdout
    found = re.search(r'<pre id="bench-timing">(.*?)</pre>', out, re.S)
    if not found:
        return f"chromium page load: no timing came back ({done.stderr[-300:]!r})"
    timing = json.loads(html.unescape(found[1]))
    return (
        f"chromium page load (headless, 1280 px): DOM ready {timing['dom_ready_ms'] / 1000:.2f} s,"
        f" load event {timing['load_ms'] / 1000:.2f} s, {timing['nodes']} elements; process "
        f"wall {walls['report']:.1f} s vs {walls['blank']:.1f} s for a blank page"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", type=int, default=500)
    n = parser.parse_args().scenarios

    started = time.perf_counter()
    results = [
        sample_result(
            i,
            start=1_700_000_000.0 + 100 * i,
            healed_by=KINDS[i % len(KINDS)],
            recover_after=None if KINDS[i % len(KINDS)] == "none" else 8 + i % 25,
            strategy=("restart-pod", "scale-up", "rollback")[i % 3],
        )
        for i in range(n)
    ]
    build_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        raw = json.dumps([r.to_dict() for r in results])
        (tmp_path / "raw.json").write_text(raw)
        baseline_s = time.perf_counter() - started

        # warm matplotlib (import, fonts) outside the timings: paid once per session
        sample = sample_result(10_000)
        started = time.perf_counter()
        html_extras(sample)
        first_chart_s = time.perf_counter() - started

        started = time.perf_counter()
        extras_size = sum(len(html_extras(r)[0]["content"]) for r in results)
        extras_s = time.perf_counter() - started

        report = tmp_path / "resilience.html"
        started = time.perf_counter()
        write_resilience_report(report, results, history_dir=tmp_path / "h", run_info={})
        warm_s = time.perf_counter() - started
        html_size, json_size = report.stat().st_size, report.with_suffix(".json").stat().st_size

        clear_chart_cache()
        started = time.perf_counter()
        write_resilience_report(report, results, history_dir=tmp_path / "h", run_info={})
        cold_s = time.perf_counter() - started
        browser = chromium_load(report, tmp_path)

    mb = 1024 * 1024
    print(f"scenarios: {n} (60 s of 1 Hz load each); results built in {build_s:.2f} s")
    print(f"baseline, results as plain JSON: {baseline_s:.2f} s, {len(raw) / mb:.1f} MiB")
    print(f"first chart (matplotlib import + fonts, once per session): {first_chart_s:.2f} s")
    print(
        f"html extras, all {n}: {extras_s:.1f} s ({1000 * extras_s / n:.0f} ms per test, "
        f"{extras_s / baseline_s:.0f}x baseline), {extras_size / mb:.1f} MiB "
        f"({extras_size / n / 1024:.0f} KiB per test)"
    )
    print(
        f"standalone report, charts reused from the extras: {warm_s:.1f} s "
        f"({warm_s / baseline_s:.0f}x baseline); HTML {html_size / mb:.1f} MiB, "
        f"JSON twin {json_size / mb:.1f} MiB"
    )
    print(
        f"standalone report, cold (every chart drawn): {cold_s:.1f} s "
        f"({cold_s / baseline_s:.0f}x baseline)"
    )
    print(browser)


if __name__ == "__main__":
    main()
