"""The guardian: a tiny process that cleans up after the session, however the session dies.

PDEATHSIG only reaches a pod's first process. The guardian holds the read end of a pipe from
the session and, when the pipe closes (which happens however we die, SIGKILL included),
kills every pod's process group, empties and removes the pod cgroups and detaches the
volumes, so a pod's children (Postgres under its wrapper, say) do not outlive the session.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["GUARDIAN_SCRIPT", "Guardian"]

log = logging.getLogger("pytest_resilience.targets.local")

#: Kills what the session leaves behind when the session dies (SIGKILL included): it holds
#: the read end of a pipe from the session and acts on EOF. Lines: "+ pgid" / "- pgid"
#: (pod process groups), "cgroup PATH" (a base cgroup: kill its processes, remove it),
#: "mount PATH" / "unmount PATH" (volumes to detach).
GUARDIAN_SCRIPT = r"""
import ctypes, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups, cgroups, mounts = set(), [], []
for line in sys.stdin:
    op, _, arg = line.rstrip("\n").partition(" ")
    if op == "+":
        groups.add(int(arg))
    elif op == "-":
        groups.discard(int(arg))
    elif op == "cgroup":
        cgroups.append(arg)
    elif op == "mount":
        mounts.append(arg)
    elif op == "unmount" and arg in mounts:
        mounts.remove(arg)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
def dirs(base):
    found = []
    for top, subdirs, _files in os.walk(base):
        found.extend(os.path.join(top, d) for d in subdirs)
    return sorted(found, key=len, reverse=True) + [base]
for base in cgroups:
    if not os.path.isdir(base):
        continue
    try:
        with open(os.path.join(base, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        for d in dirs(base):
            try:
                pids = open(os.path.join(d, "cgroup.procs")).read().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
deadline = time.monotonic() + 3
for base in cgroups:
    while os.path.isdir(base) and time.monotonic() < deadline:
        try:
            for d in dirs(base):
                os.rmdir(d)
        except OSError:
            time.sleep(0.05)
libc = ctypes.CDLL(None, use_errno=True)
for path in mounts:
    libc.umount2(path.encode(), 2)
"""


class Guardian:
    """The guardian process of one local target, told of each pod group, cgroup and mount.

    Only the supervisor thread writes to it: it must learn of a mount before the mount
    exists, and of a pod group as soon as the pod is forked.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, cgroup_bases: Iterable[Path]) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", GUARDIAN_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for base in cgroup_bases:
            self.tell(f"cgroup {base}")

    def tell(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):
            log.warning("local target guardian is gone; pods rely on PDEATHSIG alone")

    def stop(self) -> None:
        guardian, self._proc = self._proc, None
        if guardian is None:
            return
        with contextlib.suppress(OSError):
            if guardian.stdin is not None:
                guardian.stdin.close()
        try:
            guardian.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            guardian.kill()
            guardian.wait()
