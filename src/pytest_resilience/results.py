"""One chaos test's outcome as data, and the run's report written from those records.

The plugin collects a record per chaos test at teardown (when every fault has been
reverted and the timeline is complete); the report room renders them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from .run import ChaosRun
from .slo import SLOMonitor
from .timeline import Timeline

__all__ = ["scenario_result", "summary_lines", "write_report"]


def scenario_result(
    item: pytest.Item, timeline: Timeline, slo: SLOMonitor | None, outcome: str
) -> dict[str, Any]:
    from .plugin import RUN_KEY

    run = item.config.stash[RUN_KEY]
    return {
        "nodeid": item.nodeid,
        "name": item.name,
        "outcome": outcome,
        "target": run.settings.target,
        "timeline": timeline.to_dict(),
        "slo_verdicts": slo.verdicts() if slo else [],
        "figures": asdict(timeline.figures()),
    }


def write_report(run: ChaosRun) -> None:
    path = run.settings.report
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"target": run.settings.target, "scenarios": run.results, "notices": run.notices}
    path.with_suffix(".json").write_text(json.dumps(data, indent=2, default=str))


def summary_lines(run: ChaosRun) -> list[str]:
    lines = []
    for result in run.results:
        f = result["figures"]
        lines.append(
            f"{result['outcome']:>7} {result['nodeid']}: detect {_s(f['time_to_detect'])}, "
            f"mitigate {_s(f['time_to_mitigate'])}, recover {_s(f['time_to_recover'])}"
            + (f" (healed by {f['healed_by']})" if f["healed_by"] else "")
        )
    return lines


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
