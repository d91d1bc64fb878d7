"""The cgroups a local target gives its pods, and how a pod's process enters them.

A cgroup v2 directory per pod lets iptables match a pod's own traffic and lets the target
kill what escaped the pod's process group. A *memory* cgroup per pod enforces
``memory_limit_mb`` the way a container runtime does (the kernel OOM-kills inside the pod
only) and reports the pod's usage. The memory controller is taken from cgroup v2 when the
unified hierarchy offers it, else from the v1 memory hierarchy, under this process's own
memory cgroup (a sandbox may confine us to a sub-cgroup). No controller, or not root:
``RLIMIT_AS`` is the fallback, which bounds address space rather than memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from .mounts import mount_table, unescape

__all__ = [
    "MemoryController",
    "PodCgroups",
    "cgroup2_root",
    "cgroup_kill",
    "cgroup_pids",
    "enter_pod",
    "find_memory_controller",
    "limit_bytes",
    "remove_cgroup_tree",
    "sweep_stale_cgroups",
]

log = logging.getLogger("pytest_resilience.targets.local")

_MIB = 1024 * 1024
_PR_SET_PDEATHSIG = 1


def cgroup2_root() -> Path | None:
    """Where the unified (v2) hierarchy is mounted, if it is."""
    for fields in mount_table():
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def cgroup_pids(cgroup: Path) -> list[int]:
    """Every process in ``cgroup`` and its descendants (empty if it is gone)."""
    pids: list[int] = []
    for top, _subdirs, _files in os.walk(cgroup):
        with contextlib.suppress(OSError, ValueError):
            pids.extend(int(p) for p in Path(top, "cgroup.procs").read_text().split())
    return pids


def cgroup_kill(cgroup: Path) -> None:
    """SIGKILL everything in the cgroup: ``cgroup.kill`` on v2, each process on v1."""
    try:
        (cgroup / "cgroup.kill").write_text("1")
        return
    except OSError:
        pass
    for pid in cgroup_pids(cgroup):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def remove_cgroup_tree(base: Path, *, timeout: float = 3.0) -> bool:
    """Kill what is left in ``base`` and remove it with its children (deepest first)."""
    if not base.exists():
        return True
    cgroup_kill(base)
    deadline = time.monotonic() + timeout
    while True:
        try:
            for child in sorted((p for p in base.rglob("*") if p.is_dir()), key=_depth_first):
                child.rmdir()
            base.rmdir()
            return True
        except FileNotFoundError:
            continue
        except OSError as exc:
            if time.monotonic() > deadline:
                log.warning("cannot remove cgroup %s: %s", base, exc.strerror)
                return False
            time.sleep(0.02)  # killed processes leave the cgroup within milliseconds


def sweep_stale_cgroups(parent: Path) -> None:
    """Remove the (empty) pod cgroups of sessions that died with their guardian."""
    for base in parent.glob("pytest-resilience-*-*"):
        pid = base.name.split("-")[2]
        if not base.is_dir() or not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        with contextlib.suppress(OSError):
            for child in sorted((p for p in base.rglob("*") if p.is_dir()), key=_depth_first):
                child.rmdir()
            base.rmdir()
            log.info("removed stale cgroup %s", base)


@dataclass(frozen=True)
class MemoryController:
    """Where pod memory cgroups live and how to read and limit them.

    ``version`` 2: a pod's memory cgroup is its cgroup v2 directory (``base`` is the v2
    base). ``version`` 1: a separate directory under ``base`` in the v1 memory hierarchy.
    """

    version: Literal[1, 2]
    base: Path

    def set_limit(self, cgroup: Path, limit_bytes: int) -> None:
        if self.version == 2:
            (cgroup / "memory.max").write_text(str(limit_bytes))
            # Swap would turn an OOM kill into a slow crawl; pods get none, as in Kubernetes.
            with contextlib.suppress(OSError):
                (cgroup / "memory.swap.max").write_text("0")
        else:
            (cgroup / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # only with swap accounting; must be >= limit
                (cgroup / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))

    def usage(self, cgroup: Path) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int((cgroup / name).read_text())

    def oom_kills(self, cgroup: Path) -> int:
        """How often the kernel OOM-killed a process of this cgroup (0 if it cannot tell)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in (cgroup / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0


def find_memory_controller(v2_base: Path | None, name: str) -> tuple[MemoryController | None, str]:
    """A memory controller for pod cgroups, or None and why not (for the fallback log line).

    ``v2_base`` is the target's cgroup v2 base directory, if it made one; ``name`` the
    directory name for a v1 base (``pytest-resilience-<pid>-<id>``, swept when stale).
    """
    if os.geteuid() != 0:
        return None, "not root"
    if v2_base is not None:
        root = v2_base.parent
        try:
            available = (root / "cgroup.controllers").read_text().split()
        except OSError:
            available = []
        if "memory" in available:
            try:
                for directory in (root, v2_base):
                    (directory / "cgroup.subtree_control").write_text("+memory")
                return MemoryController(2, v2_base), ""
            except OSError as exc:
                log.info(
                    "cgroup v2 has a memory controller but it cannot be enabled: %s",
                    exc,
                )
    mine = _own_v1_memory_cgroup()
    if mine is None:
        return None, "no memory controller in cgroup v2 and no v1 memory hierarchy"
    sweep_stale_cgroups(mine)
    base = mine / name
    try:
        base.mkdir()
    except OSError as exc:
        return None, f"cannot create {base}: {exc.strerror}"
    return MemoryController(1, base), ""


@dataclass
class PodCgroups:
    """The cgroups one local target makes for its pods, created at start, removed at close.

    ``v2_base`` holds a cgroup v2 directory per pod (iptables ``-m cgroup --path`` matches a
    pod's traffic; close() kills what left the pod's process group). ``memory`` gives each
    pod a memory cgroup (v2: that same directory). Either may be missing: not root, no such
    hierarchy; ``memory_fallback`` then says why, for the RLIMIT_AS log line.
    """

    v2_root: Path | None = None
    v2_base: Path | None = None
    memory: MemoryController | None = None
    memory_fallback: str = ""

    @classmethod
    def for_target(cls, name: str, limited: list[str]) -> PodCgroups:
        """:meth:`create`, with a warning when the services ``limited`` (those with a
        ``memory_limit_mb``) get RLIMIT_AS instead of memory cgroups."""
        made = cls.create(name)
        if limited and made.memory is None:
            log.warning(
                "memory_limit_mb of %s enforced with RLIMIT_AS (address space, not resident "
                "memory: a limit can stop a program that maps much but uses little), because "
                "pods get no memory cgroup here: %s",
                ", ".join(limited),
                made.memory_fallback,
            )
        return made

    @classmethod
    def create(cls, name: str) -> PodCgroups:
        """Base directories named ``name`` (``pytest-resilience-<pid>-<id>``, swept when
        stale by a later session); stale bases of dead sessions are removed first."""
        made = cls()
        root = cgroup2_root()
        if root is not None and os.geteuid() == 0:
            sweep_stale_cgroups(root)
            try:
                (root / name).mkdir()
                made.v2_root, made.v2_base = root, root / name
            except OSError as exc:
                log.info(
                    "no per-pod cgroups (cannot create %s: %s)",
                    root / name,
                    exc.strerror,
                )
        made.memory, made.memory_fallback = find_memory_controller(made.v2_base, name)
        return made

    @property
    def bases(self) -> list[Path]:
        """The base directories, for the guardian to empty and remove if we die."""
        bases = [self.v2_base] if self.v2_base is not None else []
        if self.memory is not None and self.memory.version == 1:
            bases.append(self.memory.base)
        return bases

    def make(self, pod: str, limit: int | None) -> tuple[Path | None, Path | None, int | None]:
        """(v2 cgroup, memory cgroup, RLIMIT_AS to set instead of a cgroup limit) of a pod."""
        cgroup = memory_cgroup = None
        if self.v2_base is not None:
            try:
                (self.v2_base / pod).mkdir()
                cgroup = self.v2_base / pod
            except OSError as exc:
                log.warning("pod %s gets no cgroup: %s", pod, exc.strerror)
        memory = self.memory
        if memory is not None and memory.version == 2:
            memory_cgroup = cgroup
        elif memory is not None:
            try:
                (memory.base / pod).mkdir()
                memory_cgroup = memory.base / pod
            except OSError as exc:
                log.warning("pod %s gets no memory cgroup: %s", pod, exc.strerror)
        if limit is None or memory is None or memory_cgroup is None:
            return cgroup, memory_cgroup, limit
        try:
            memory.set_limit(memory_cgroup, limit)
        except OSError as exc:
            log.warning("pod %s: cannot limit its memory cgroup (%s): RLIMIT_AS", pod, exc)
            return cgroup, memory_cgroup, limit
        return cgroup, memory_cgroup, None

    def usage(self, memory_cgroup: Path | None) -> int | None:
        if self.memory is None or memory_cgroup is None:
            return None
        try:
            return self.memory.usage(memory_cgroup)
        except (OSError, ValueError):
            return None  # the pod just went away

    def oom_killed(self, memory_cgroup: Path | None) -> bool:
        if self.memory is None or memory_cgroup is None:
            return False
        return self.memory.oom_kills(memory_cgroup) > 0

    def relative(self, cgroup: Path | None) -> str | None:
        """A pod's v2 cgroup as iptables names it (relative to the v2 root)."""
        if cgroup is None or self.v2_root is None:
            return None
        return str(cgroup.relative_to(self.v2_root))

    def remove(self) -> None:
        memory, self.memory = self.memory, None
        if memory is not None and memory.version == 1:
            remove_cgroup_tree(memory.base)
        base, self.v2_base = self.v2_base, None
        if base is not None:
            remove_cgroup_tree(base)


def enter_pod(
    libc: ctypes.CDLL,
    parent: int,
    cgroup_procs: tuple[str, ...],
    rlimit_as: int | None,
    ids: tuple[int, int] | None,
) -> None:
    """preexec_fn of pod processes: SIGKILL this process when the supervisor thread (and so
    we) die, move into the pod's cgroups, bound its address space if asked, then drop to the
    pod's user (last: joining a root-owned cgroup needs root). Runs between fork and exec."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(137)
    for procs in cgroup_procs:
        try:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError:
            pass  # without its cgroup: no egress match, no memory cgroup for this process
    if rlimit_as is not None:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
    if ids is not None:
        os.setgroups([])
        os.setgid(ids[1])
        os.setuid(ids[0])


def _own_v1_memory_cgroup() -> Path | None:
    """This process's cgroup directory in the v1 memory hierarchy, if mounted and present."""
    mount: tuple[str, str] | None = None  # (mount point, root of the hierarchy it shows)
    try:
        with open("/proc/self/mountinfo") as info:
            for line in info:
                pre, _, post = line.partition(" - ")
                fields, tail = pre.split(), post.split()
                if len(tail) >= 3 and tail[0] == "cgroup" and "memory" in tail[2].split(","):
                    mount = (unescape(fields[4]), fields[3])
                    break
        with open("/proc/self/cgroup") as table:
            own = next(
                path
                for _, controllers, path in (ln.rstrip("\n").split(":", 2) for ln in table)
                if "memory" in controllers.split(",")
            )
    except (OSError, StopIteration, ValueError):
        return None
    if mount is None:
        return None
    point, root = mount
    relative = os.path.relpath(own, root)
    if relative.startswith(".."):
        return None  # our cgroup is outside what this mount shows
    directory = Path(point) / relative
    return directory if (directory / "cgroup.procs").exists() else None


def _depth_first(path: Path) -> int:
    return -len(path.parts)


def limit_bytes(limit_mb: int | None) -> int | None:
    return None if limit_mb is None else limit_mb * _MIB
