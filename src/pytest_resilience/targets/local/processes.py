"""A pod's processes: all of them, signalled, waited for, measured; whom they run as.

Pausing a pod must stop every process of it; Postgres backends call setsid(), so the pod's
process group is not enough: the process tree and the pod's cgroups are walked too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from ...errors import TargetError
from .cgroups import cgroup_pids

if TYPE_CHECKING:
    from ..services import ServiceSpec

__all__ = [
    "killpg",
    "pod_processes",
    "signal_processes",
    "tree_rss",
    "user_entry",
    "wait_stopped",
]


def pod_processes(leader: int, cgroups: Iterable[Path] = ()) -> set[int]:
    """Every live process of a pod: its first process, all descendants (also those that
    called setsid()), and whatever sits in the pod's cgroups (helpers, reparented orphans)."""
    found: set[int] = set()
    try:
        root = psutil.Process(leader)
        found.add(leader)
        found.update(child.pid for child in root.children(recursive=True))
    except psutil.Error:
        pass
    for cgroup in cgroups:
        found.update(cgroup_pids(cgroup))
    return found


def signal_processes(leader: int, cgroups: Iterable[Path], sig: int) -> set[int]:
    """Send ``sig`` to the pod's process group and every process of its tree.

    Repeated until no new process shows up, so a child forked while we were signalling is
    not missed (a stopped process forks nothing more).
    """
    cgroups = list(cgroups)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    done: set[int] = set()
    for _round in range(10):
        fresh = pod_processes(leader, cgroups) - done
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        done |= fresh
    return done


def wait_stopped(pids: Iterable[int], *, timeout: float) -> list[int]:
    """Wait until each process is stopped (or gone); returns those that are not."""
    deadline = time.monotonic() + timeout
    waiting = set(pids)
    while waiting:
        for pid in list(waiting):
            try:
                if psutil.Process(pid).status() in (
                    psutil.STATUS_STOPPED,
                    psutil.STATUS_ZOMBIE,
                ):
                    waiting.discard(pid)
            except psutil.NoSuchProcess:
                waiting.discard(pid)
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.005)  # poll interval: SIGSTOP is delivered asynchronously
    return sorted(waiting)


def tree_rss(leader: int, cgroups: Iterable[Path] = ()) -> int:
    total = 0
    for pid in pod_processes(leader, cgroups):
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def killpg(pgid: int, sig: int) -> None:
    """Signal a process group that may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def user_entry(spec: ServiceSpec) -> pwd.struct_passwd:
    """The passwd entry of the service's ``user``; a TargetError naming it if there is none."""
    try:
        return pwd.getpwnam(spec.user or "")
    except KeyError:
        raise TargetError(f"service {spec.name!r}: user {spec.user!r} does not exist") from None
