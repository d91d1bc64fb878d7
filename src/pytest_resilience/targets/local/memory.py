"""Memory pressure on the local target: a helper process inside the pod holds the memory.

The helper is started *inside* the pod (``spawn_in_pod``: the pod's memory cgroup,
process group and user), so what it allocates is charged to the pod and the kernel
enforces ``memory_limit_mb`` on it exactly as it would on the service's own growth; the
demo API reports the pod's cgroup usage as ``demo_memory_usage_bytes`` on /metrics. The
helper (``faults/_memory_hog.py``, run as a program) is asked for ``share * limit - current
usage`` bytes, says when they are resident, and holds them until the undo terminates it.

The change record holds each helper's pid *and* its start time (psutil ``create_time``): a
cleanup after SIGKILL terminates that process only if it is still the same one, never a
stranger that inherited the pid. Helpers also carry the ledger id on their command line
(``--tag``), so a fault killed before any pid reached the ledger is still found. A killed
session's helpers die with it anyway (parent death signal, and the target's guardian
empties the pod cgroups).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "ALLOCATE_TIMEOUT_S",
    "HOG_MODULE",
    "Hog",
    "ReportPipe",
    "exit_text",
    "is_hog",
    "same_process",
    "stop",
    "stop_process",
    "stop_tagged",
]

log = logging.getLogger("pytest_resilience.faults")

HOG_MODULE = "pytest_resilience.faults._memory_hog"
#: how long a helper may take to allocate and say so (a loaded 2-core machine, ~200 MiB)
ALLOCATE_TIMEOUT_S = 30.0
#: how long a helper gets to exit on SIGTERM before it is SIGKILLed
STOP_TIMEOUT_S = 5.0
#: start times are compared with this slack (psutil rounds to clock ticks)
_SAME_START_S = 0.05


@dataclass(frozen=True)
class Hog:
    """One helper holding memory in one pod, as the change record keeps it."""

    pod: str
    pid: int
    create_time: float
    bytes: int


class ReportPipe:
    """A FIFO a helper writes its ``allocated`` line to, read here with a deadline.

    The read end is opened (non-blocking) before any helper starts, so a helper's open
    never fails; the directory is world-traversable and the FIFO world-writable because a
    pod may run as its own user.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pytest-resilience-mem-"))
        self.dir.chmod(0o711)
        self.path = self.dir / "report"
        os.mkfifo(self.path)
        self.path.chmod(0o622)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # A writer of our own: once a helper closes its end, a FIFO with no writer left
        # would poll as readable (HUP) forever, and read_line would spin.
        self._keep = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._buffer = b""

    def close(self) -> None:
        os.close(self._keep)
        os.close(self.fd)
        shutil.rmtree(self.dir, ignore_errors=True)

    def read_line(self, proc: subprocess.Popen[bytes], *, timeout: float) -> str | None:
        """The next line, or None if ``proc`` exits first or the deadline passes."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # Wake at least every 0.1 s to notice a helper that died without writing.
            readable, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if readable:
                chunk = os.read(self.fd, 4096)
                self._buffer += chunk
                if chunk:
                    continue
            if proc.poll() is not None and b"\n" not in self._buffer:
                # It may have written just before exiting: one last look.
                with contextlib.suppress(BlockingIOError):
                    self._buffer += os.read(self.fd, 4096)
                if b"\n" not in self._buffer:
                    return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, SIGKILL if it will not go; idempotent (already gone is fine)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
    else:
        proc.wait()


def stop_process(process: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def is_hog(process: psutil.Process, tag: str | None = None) -> bool:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return False
    if HOG_MODULE not in argv:
        return False
    return tag is None or (tag in argv and argv[argv.index(tag) - 1] == "--tag")


def stop_tagged(tag: str) -> int:
    """Stop every helper carrying ``tag``; returns how many there were."""
    if not tag:
        return 0
    found = 0
    for process in psutil.process_iter():
        if process.pid != os.getpid() and is_hog(process, tag):
            log.info("memory_stress: stopping helper %d tagged %s", process.pid, tag)
            stop_process(process)
            found += 1
    return found


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        return f"{name} (OOM-killed?)" if code == -signal.SIGKILL else name
    return f"exit code {code}"


def same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is still the one that started at ``create_time``."""
    try:
        process = psutil.Process(int(pid))
        same = abs(process.create_time() - float(create_time)) < _SAME_START_S
    except psutil.NoSuchProcess:
        return None
    return process if same else None
