"""Where a report's times count from: T0 (the first fault), else the scenario's start.

The scenario result and the experiment journal both turn a timeline's wall-clock times
into seconds from that origin, so that a figure is never an epoch timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["from_start", "seconds_since", "start_of", "time_zero"]


def seconds_since(at: float, zero: float) -> float:
    """``at`` in seconds after ``zero``, to the millisecond."""
    return round(at - zero, 3)


def start_of(timeline: Mapping[str, Any]) -> float:
    """The scenario's start (wall clock) as ``Timeline.to_dict()`` gives it; 0 if none."""
    return float(timeline.get("started_at") or 0.0)


def time_zero(timeline: Mapping[str, Any]) -> float:
    """T0 when a fault was injected, else the scenario's start."""
    t0 = timeline.get("t0")
    return float(t0) if t0 is not None else start_of(timeline)


def from_start(at: float | None, timeline: Mapping[str, Any]) -> float | None:
    """A time that ``SLOMonitor.verdicts()`` gave as wall clock (it does without a T0).

    Only a time at or after the timeline's start is wall clock: one already counted from
    the start is seconds, far below any epoch, and stays as it is.
    """
    started = start_of(timeline)
    if at is None or at < started or not started:
        return at
    return seconds_since(at, started)
