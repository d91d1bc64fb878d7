"""Bounded volumes: ``volume: {size_mb: N}`` mounts a tmpfs of N MiB as a service's data dir.

A PrivilegeError when the mount is refused (the target then keeps a plain directory). The
mount's source field is ``pytest-resilience-vol-<pid>``, so a later session can tell a dead
session's mounts from live ones and detach them, in case the guardian died too.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from ...errors import PrivilegeError, TargetError
from .mounts import mount_table
from .processes import user_entry

if TYPE_CHECKING:
    from .guardian import Guardian
    from .state import ServiceState

__all__ = [
    "VOLUME_SOURCE_PREFIX",
    "DataDirs",
    "mount_volume",
    "mounted_volumes",
    "sweep_stale_volumes",
    "unmount_volume",
]

log = logging.getLogger("pytest_resilience.targets.local")

VOLUME_SOURCE_PREFIX = "pytest-resilience-vol-"
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


class DataDirs:
    """The data dirs of one target: made at start, each declared volume mounted (or a plain
    directory, with the reason kept); the volumes unmounted at close.

    Runs on the supervisor thread: it alone writes to the guardian, which must learn of each
    mount before it exists.
    """

    def __init__(self, guardian: Guardian) -> None:
        self._guardian = guardian
        self._mounted: list[Path] = []  # in mount order
        #: declared volumes that are plain directories (no tmpfs to be had): service -> why
        self.unbounded: dict[str, str] = {}

    def prepare(self, services: Iterable[ServiceState]) -> None:
        sweep_stale_volumes()
        for svc in services:
            if svc.data_dir is None:
                continue
            svc.data_dir.mkdir(parents=True, exist_ok=True)
            if svc.spec.volume_mb is not None:
                self._mount_or_fall_back(svc.spec.name, svc.data_dir, svc.spec.volume_mb)
            if svc.spec.user:
                entry = user_entry(svc.spec)
                os.chown(svc.data_dir, entry.pw_uid, entry.pw_gid)

    def _mount_or_fall_back(self, service: str, path: Path, size_mb: int) -> None:
        """Mount the bounded volume; without the privilege to mount, keep a plain directory.

        A plain directory lets the service (and the demo) run as a normal user; only
        ``disk_fill`` needs the bound, and ``LocalTarget.volume`` refuses it there, naming why.
        """
        why = None
        if os.geteuid() != 0:
            why = f"a tmpfs mount needs root and this process runs as uid {os.geteuid()}"
        else:
            self._guardian.tell(f"mount {path}")
            try:
                mount_volume(path, size_mb, service=service)
            except PrivilegeError as exc:
                self._guardian.tell(f"unmount {path}")
                why = str(exc)
            except TargetError:
                self._guardian.tell(f"unmount {path}")
                raise
            else:
                self._mounted.append(path)
                return
        self.unbounded[service] = why
        log.warning(
            "service %s: volume of %d MiB is a plain directory at %s, not a bounded "
            "filesystem (%s); the service runs, disk_fill on it is refused",
            service,
            size_mb,
            path,
            why,
        )

    def bounded(self, svc: ServiceState) -> Path | None:
        """The mount point of the service's bounded volume (its data_dir), None without one;
        a PrivilegeError when it got a plain directory instead."""
        if svc.spec.volume_mb is None:
            return None
        why = self.unbounded.get(svc.spec.name)
        if why is not None:
            raise PrivilegeError(
                f"service {svc.spec.name!r} has no bounded volume: its data dir {svc.data_dir} "
                f"is a plain directory on the host's filesystem ({why}); filling it needs the "
                f"declared volume of {svc.spec.volume_mb} MiB, a tmpfs mount: run as root "
                "(with CAP_SYS_ADMIN)"
            )
        return svc.data_dir

    def unmount_all(self) -> None:
        while self._mounted:
            path = self._mounted.pop()
            unmount_volume(path)
            self._guardian.tell(f"unmount {path}")


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
    for fields in mount_table():
        source = fields[0]
        if len(fields) > 2 and fields[2] == "tmpfs" and source.startswith(VOLUME_SOURCE_PREFIX):
            pid = source[len(VOLUME_SOURCE_PREFIX) :]
            if pid.isdigit():
                found.append((int(pid), Path(fields[1])))
    return found


def sweep_stale_volumes() -> list[Path]:
    """Detach the volumes of sessions that died without unmounting (guardian killed too)."""
    swept = []
    for pid, path in mounted_volumes():
        if pid != os.getpid() and not psutil.pid_exists(pid):
            unmount_volume(path)
            log.info("detached stale volume %s of dead session %d", path, pid)
            swept.append(path)
    return swept
