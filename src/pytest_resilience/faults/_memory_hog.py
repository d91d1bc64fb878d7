"""The helper process of memory_stress: grow by N bytes, say so, hold until told to stop.

Run inside a pod (``target.spawn_in_pod``) so every byte counts against the pod's memory
cgroup, exactly like a leak in the service would::

    python -m pytest_resilience.faults._memory_hog --bytes N [--report FIFO] [--release]

``N`` is the growth the pod should see, this interpreter included: the anonymous memory
the interpreter already holds at start is subtracted, so the pod lands on the share asked
for. Memory is written, not merely reserved (untouched pages cost nothing and would fool
the test). Once allocated it writes ``allocated <bytes>`` to ``--report`` (a FIFO the
fault reads with a deadline; a pod's helper has /dev/null as stdin and the pod's log as
stdout, so neither can carry the answer) and to stdout (the pod's log). Then it holds
the memory until SIGTERM or SIGINT, or, with ``--stdin-eof``, until stdin closes.
``--release`` frees it at once instead (a spike rather than pressure).

Nothing from the package is imported: the helper must start fast and stay small.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

CHUNK = 4 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def own_resident() -> int:
    """Resident bytes this process added (anonymous): shared file pages such as libpython
    are most likely charged to whoever read them first, not to the pod."""
    with open("/proc/self/statm") as statm:
        fields = statm.read().split()
    return (int(fields[1]) - int(fields[2])) * _PAGE


def allocate(wanted: int) -> list[bytearray]:
    """``wanted`` bytes in chunks, every page written (resident, charged to the cgroup)."""
    held: list[bytearray] = []
    left = wanted
    while left > 0:
        size = min(CHUNK, left)
        held.append(bytearray(b"\xa5") * size)
        left -= size
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest_resilience.faults._memory_hog")
    parser.add_argument("--bytes", type=int, required=True, help="growth of the pod, in bytes")
    parser.add_argument("--report", help="FIFO (or file) to write 'allocated <bytes>' to")
    parser.add_argument("--release", action="store_true", help="free the memory at once")
    parser.add_argument("--stdin-eof", action="store_true", help="also stop on stdin EOF")
    parser.add_argument("--tag", default="", help="the ledger id (found by cleanup)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    held = allocate(max(0, args.bytes - own_resident()))
    line = f"allocated {sum(len(c) for c in held)} resident {own_resident()}\n"
    sys.stdout.write(f"memory_hog {args.tag}: {line}")
    sys.stdout.flush()
    if args.report:
        try:  # non-blocking: a reader that gave up must not leave us stuck in open()
            fd = os.open(args.report, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            pass
        else:
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
    if args.release:
        return 0
    if args.stdin_eof:

        def stop_at_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=stop_at_eof, daemon=True).start()
    while not stop.wait(3600):
        pass
    del held
    return 0


if __name__ == "__main__":
    sys.exit(main())
