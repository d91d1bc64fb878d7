"""Start a LocalTarget in its own process, for the orphan tests.

Prints one JSON line (pod pids, their descendants, the guardian's pid), then waits.
SIGTERM and SIGINT close the target before exiting, as the plugin's handlers do;
SIGKILL leaves the pods to PDEATHSIG and the guardian.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import psutil

from pytest_resilience.targets.local import LocalTarget


def main() -> None:
    services, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
    target = LocalTarget.from_file(services, work_dir=work_dir)

    def on_term(signum: int, frame: object) -> None:
        target.close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        target.start()
        pods = [p.pid for p in target.pods()]
        family = [c.pid for pid in pods for c in psutil.Process(pid).children(recursive=True)]
        guardian = target._guardian.pid if target._guardian else None
        print(json.dumps({"pods": pods, "family": family, "guardian": guardian}), flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        target.close()


if __name__ == "__main__":
    main()
