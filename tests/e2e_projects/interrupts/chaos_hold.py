"""A chaos test that injects a fault, says so in a state file, then blocks.

The driving test (tests/faults/test_interrupts.py) interrupts this session while the fault is
active. The file is not named test_*.py so that only an explicit path collects it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

SELECTOR = os.environ.get("E2E_SELECTOR", "app=web")
HOLD_S = 120.0  # only a safety net should the driving test die: it interrupts long before


@pytest.mark.chaos
def test_hold_network_block(chaos_target, network_block):
    block = network_block(SELECTOR, direction="ingress", action="reject")
    pods = chaos_target.pods()
    state = {
        "chain": block.fault.chain,
        "work_dir": str(chaos_target.work_dir),
        "ports": sorted(
            {port for pod in pods for port in pod.ports}
            | {chaos_target.port_of(w.name) for w in chaos_target.workloads()}
        ),
        "pids": [pod.pid for pod in pods],
        "pytest_pid": os.getpid(),
    }
    path = Path(os.environ["E2E_STATE"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(state))
    partial.rename(path)  # atomic: the driver never reads half a file
    threading.Event().wait(HOLD_S)
    pytest.fail(f"nobody interrupted this session within {HOLD_S:g} s")
