"""A pod that grows its memory on demand, for the local target's memory-limit tests.

Idle until SIGUSR1; then writes ``--mb`` MiB in 4 MiB chunks (each byte written, so the pages
are resident, not merely reserved) and stays alive holding them.
"""

from __future__ import annotations

import argparse
import signal
import threading

_CHUNK = 4 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, required=True)
    args = parser.parse_args()
    go = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: go.set())
    print("hog idle", flush=True)
    go.wait()
    held = [bytearray(b"\x5a") * _CHUNK for _ in range(args.mb * 1024 * 1024 // _CHUNK)]
    print(f"hog holds {len(held) * 4} MiB", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
