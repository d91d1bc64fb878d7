"""Durations as playbooks write them: ``500ms``, ``5s``, ``2m``, ``1h`` or a number of seconds.

Its own module because playbooks (``verify.wait``, ``for:``) and the options of actions
(``idle_for`` of the datastore actions) read the same format.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ConfigError

__all__ = ["parse_duration"]


def parse_duration(value: Any, *, field: str = "duration", source: str | None = None) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if match:
            scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
            return float(match.group(1)) * scale
    raise ConfigError(
        f"invalid duration {value!r}: use e.g. 500ms, 5s, 2m or a number of seconds",
        source=source,
        field=field,
    )
