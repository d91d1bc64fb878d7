"""What the local target gives pods beyond a process: cgroups, bounded volumes, proxies.

Kept apart from ``local.py`` (supervision) because each part here talks to one kernel or
server interface and has its own failure modes:

* **cgroups.** A cgroup v2 directory per pod lets iptables match a pod's own traffic and
  lets the target kill what escaped the pod's process group. A *memory* cgroup per pod
  enforces ``memory_limit_mb`` the way a container runtime does (the kernel OOM-kills inside
  the pod only) and reports the pod's usage. The memory controller is taken from cgroup v2
  when the unified hierarchy offers it, else from the v1 memory hierarchy, under this
  process's own memory cgroup (a sandbox may confine us to a sub-cgroup). No controller, or
  not root: ``RLIMIT_AS`` is the fallback, which bounds address space rather than memory.
* **volumes.** ``volume: {size_mb: N}`` mounts a tmpfs of N MiB as the service's data dir
  (a PrivilegeError when the mount is refused: the target then keeps a plain directory).
  The mount's source field is ``pytest-resilience-vol-<pid>``, so a later session can tell a
  dead session's mounts from live ones and detach them, in case the guardian died too.
* **proxies.** Proxied services are reached through Toxiproxy; the server is resolved the way
  the toxiproxy faults expect (given URL, binary on PATH, embedded process).
* **process trees.** Pausing a pod must stop every process of it; Postgres backends call
  setsid(), so the pod's process group is not enough.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psutil

from ..errors import ConfigError, FaultError, PrivilegeError, TargetError

if TYPE_CHECKING:
    from ..toxiproxy.resolve import ToxiproxyServerHandle

__all__ = [
    "GUARDIAN_SCRIPT",
    "VOLUME_SOURCE_PREFIX",
    "MemoryController",
    "PodCgroups",
    "ProxyRoutes",
    "cgroup2_root",
    "cgroup_kill",
    "cgroup_pids",
    "enter_pod",
    "find_memory_controller",
    "limit_bytes",
    "mount_points",
    "mount_volume",
    "pod_processes",
    "remove_cgroup_tree",
    "signal_processes",
    "start_proxies",
    "sweep_stale_cgroups",
    "sweep_stale_volumes",
    "tree_rss",
    "unmount_volume",
    "wait_stopped",
]

log = logging.getLogger("pytest_resilience.targets.local")

VOLUME_SOURCE_PREFIX = "pytest-resilience-vol-"
_MIB = 1024 * 1024
_MS_NOSUID, _MS_NODEV = 2, 4
_PR_SET_PDEATHSIG = 1
_MNT_DETACH = 2

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


# ---------------------------------------------------------------------- cgroups


def cgroup2_root() -> Path | None:
    """Where the unified (v2) hierarchy is mounted, if it is."""
    for fields in _mount_table():
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
                log.info("cgroup v2 has a memory controller but it cannot be enabled: %s", exc)
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
                log.info("no per-pod cgroups (cannot create %s: %s)", root / name, exc.strerror)
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
                    mount = (_unescape(fields[4]), fields[3])
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


# ---------------------------------------------------------------------- process trees


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
                if psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
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


# ---------------------------------------------------------------------- volumes


def mount_volume(path: Path, size_mb: int, *, service: str) -> None:
    """Mount a tmpfs of ``size_mb`` MiB at ``path`` (mode 0755, nosuid, nodev)."""
    libc = ctypes.CDLL(None, use_errno=True)
    source = f"{VOLUME_SOURCE_PREFIX}{os.getpid()}".encode()
    options = f"size={size_mb}m,mode=0755".encode()
    if libc.mount(source, str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        code = ctypes.get_errno()
        if code == errno.EPERM:
            raise PrivilegeError(
                f"mounting a tmpfs at {path} was refused ({os.strerror(code)}): it needs "
                f"root with CAP_SYS_ADMIN, which this process (uid {os.geteuid()}) lacks"
            )
        raise TargetError(
            f"service {service!r}: cannot mount its volume (tmpfs, size={size_mb}m) at {path}: "
            f"{os.strerror(code)}"
        )
    log.info("service %s: volume of %d MiB mounted at %s", service, size_mb, path)


def unmount_volume(path: Path) -> None:
    """Unmount; detach lazily if a straggler still holds a file open on it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(str(path).encode(), 0) == 0:
        return
    code = ctypes.get_errno()
    if code == errno.EINVAL:
        return  # not mounted (any more)
    if libc.umount2(str(path).encode(), _MNT_DETACH) != 0:
        log.warning("cannot unmount volume %s: %s", path, os.strerror(ctypes.get_errno()))
    else:
        log.info("volume %s busy (%s): detached lazily", path, os.strerror(code))


def mounted_volumes() -> list[tuple[int, Path]]:
    """(owner pid, mount point) of every volume a local target mounted, live or stale."""
    found = []
    for fields in _mount_table():
        source = fields[0]
        if len(fields) > 2 and fields[2] == "tmpfs" and source.startswith(VOLUME_SOURCE_PREFIX):
            pid = source[len(VOLUME_SOURCE_PREFIX) :]
            if pid.isdigit():
                found.append((int(pid), Path(fields[1])))
    return found


def mount_points() -> list[Path]:
    """Every mount point on this machine (any filesystem), as this process sees them."""
    return [Path(fields[1]) for fields in _mount_table() if len(fields) > 1]


def sweep_stale_volumes() -> list[Path]:
    """Detach the volumes of sessions that died without unmounting (guardian killed too)."""
    swept = []
    for pid, path in mounted_volumes():
        if pid != os.getpid() and not psutil.pid_exists(pid):
            unmount_volume(path)
            log.info("detached stale volume %s of dead session %d", path, pid)
            swept.append(path)
    return swept


def _mount_table() -> list[list[str]]:
    try:
        with open("/proc/self/mounts") as mounts:
            return [[_unescape(f) for f in line.split()] for line in mounts]
    except OSError:
        return []


def _unescape(field_text: str) -> str:
    """/proc mount tables write space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field_text = field_text.replace(code, chr(int(code[1:], 8)))
    return field_text


# ---------------------------------------------------------------------- proxies


@dataclass
class ProxyRoutes:
    """The Toxiproxy server of a local target and the proxies made on it (name -> port)."""

    handle: ToxiproxyServerHandle
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def kind(self) -> str:
        return self.handle.kind

    def close(self) -> None:
        """Stop a server we started; on someone else's server remove only our proxies."""
        if self.handle.kind == "external":
            from ..toxiproxy.client import ToxiproxyClient

            client = ToxiproxyClient(self.handle.url)
            for name in self.ports:
                try:
                    client.delete_proxy(name)
                except FaultError as exc:
                    log.warning("cannot remove proxy %r from %s: %s", name, self.handle.url, exc)
        self.handle.stop()


def start_proxies(url: str | None, routes: Mapping[str, tuple[int, int]]) -> ProxyRoutes:
    """Resolve a Toxiproxy server and create (or replace) one proxy per route.

    ``routes`` maps a proxy name to (listen port, upstream port), both on 127.0.0.1.
    """
    from ..toxiproxy.client import ToxiproxyClient
    from ..toxiproxy.resolve import resolve_server

    try:
        handle = resolve_server(url)
    except FaultError as exc:
        raise TargetError(f"proxied services need a Toxiproxy server: {exc}") from exc
    try:
        ToxiproxyClient(handle.url).populate(
            [
                {
                    "name": name,
                    "listen": f"127.0.0.1:{listen}",
                    "upstream": f"127.0.0.1:{upstream}",
                    "enabled": True,
                }
                for name, (listen, upstream) in routes.items()
            ]
        )
    except (FaultError, ConfigError) as exc:
        handle.stop()
        raise TargetError(
            f"cannot create proxies {', '.join(routes)} on {handle.url}: {exc}"
        ) from exc
    except BaseException:
        handle.stop()
        raise
    log.info(
        "toxiproxy (%s, %s): %s",
        handle.kind,
        handle.url,
        ", ".join(f"{n} :{listen} -> :{up}" for n, (listen, up) in routes.items()),
    )
    return ProxyRoutes(handle, {name: listen for name, (listen, _) in routes.items()})


def limit_bytes(limit_mb: int | None) -> int | None:
    return None if limit_mb is None else limit_mb * _MIB
