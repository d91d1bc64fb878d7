"""A test that runs load through the ``load`` fixture (workers from --load-workers), says
so in a state file, then blocks until tests/load/test_load_workers.py interrupts the session.

Not named test_*.py, so only an explicit path collects it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

HOLD_S = 120.0  # only a safety net should the driving test die: it interrupts long before


def test_hold_load(load):
    run = load(host=os.environ["E2E_HOST"], users=2, locustfile=os.environ["E2E_LOCUSTFILE"])
    run.wait_for_samples(1, timeout=60)
    path = Path(os.environ["E2E_STATE"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"pids": [run.pid, *run.worker_pids]}))
    partial.rename(path)  # atomic: the driver never reads half a file
    threading.Event().wait(HOLD_S)
    pytest.fail(f"nobody interrupted this session within {HOLD_S:g} s")
