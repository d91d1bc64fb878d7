"""Functions the python provider calls in tests/chaostoolkit experiments (ours, not fetched)."""

from __future__ import annotations

from typing import Any


def status_below(limit: int, value: dict[str, Any]) -> bool:
    """A tolerance probe: chaoslib passes the probed output as ``value``."""
    return int(value["status"]) < limit


def describe(version: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    print("printed by the function: must not spoil the result")
    return {"version": version, "configured": sorted(configuration or {})}
