"""What the plugin keeps on pytest's config and items: its stash keys, in one place.

The hooks of plugin.py and the rooms they call (outcomes.py, item_results.py) read and
write the same keys; kept here, none of them imports plugin.py. The value types are
annotations only, so that importing this module imports none of the modules defining them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .preflight import Verdict
    from .run import ChaosRun
    from .slo import SLOMonitor
    from .timeline import Timeline

__all__ = [
    "DURATION_KEY",
    "EXPECTED_KEY",
    "OUTCOME_KEY",
    "PREFLIGHT_KEY",
    "PREVIOUS_SIGTERM_KEY",
    "RUN_KEY",
    "SLO_KEY",
    "SNAPSHOTS_KEY",
    "TIMELINE_KEY",
    "VERDICTS_KEY",
]

# -- on the config: the session ------------------------------------------------------------
RUN_KEY: pytest.StashKey[ChaosRun] = pytest.StashKey()
#: the preflight's verdicts, one per chaos item
VERDICTS_KEY: pytest.StashKey[Sequence[Verdict]] = pytest.StashKey()
SNAPSHOTS_KEY = pytest.StashKey[dict[str, Any]]()  # baseline nodeid -> its twin's start state
PREVIOUS_SIGTERM_KEY = pytest.StashKey[Any]()  # the handler ours replaced, put back at exit

# -- on an item: one scenario --------------------------------------------------------------
TIMELINE_KEY: pytest.StashKey[Timeline] = pytest.StashKey()
SLO_KEY: pytest.StashKey[SLOMonitor] = pytest.StashKey()
OUTCOME_KEY = pytest.StashKey[str]()  # passed, failed, skipped or error (setup failed)
DURATION_KEY = pytest.StashKey[float]()  # of the phase that decided the outcome
PREFLIGHT_KEY = pytest.StashKey[str]()  # why this machine cannot run it (fails under CI)
EXPECTED_KEY = pytest.StashKey[str]()  # a baseline's expected failure (see baseline.py)
