"""Start a LocalTarget in its own process, for the orphan tests.

Prints one JSON line (pod pids, their descendants, the guardian's pid), then waits.
SIGTERM and SIGINT close the target before exiting, as the plugin's handlers do;
SIGKILL leaves the pods to PDEATHSIG and the guardian.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil

from pytest_resilience.targets.local import LocalTarget


def main() -> None:
    services, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
    target = LocalTarget.from_file(services, work_dir=work_dir)
    # The handlers only wake the main thread through a pipe: raising from a handler can
    # land inside threading's lock internals and break them ("release unlocked lock").
    wake_r, wake_w = os.pipe()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: os.write(wake_w, b"x"))
    try:
        target.start()
        pods = [p.pid for p in target.pods()]
        family = [c.pid for pid in pods for c in psutil.Process(pid).children(recursive=True)]
        guardian = target._guardian.pid if target._guardian else None
        print(json.dumps({"pods": pods, "family": family, "guardian": guardian}), flush=True)
        os.read(wake_r, 1)  # until SIGTERM or SIGINT
    finally:
        target.close()


if __name__ == "__main__":
    main()
