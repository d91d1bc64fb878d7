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
from pathlib import Path

import psutil

from ...errors import PrivilegeError, TargetError
from .mounts import mount_table

__all__ = [
    "VOLUME_SOURCE_PREFIX",
    "mount_volume",
    "mounted_volumes",
    "sweep_stale_volumes",
    "unmount_volume",
]

log = logging.getLogger("pytest_resilience.targets.local")

VOLUME_SOURCE_PREFIX = "pytest-resilience-vol-"
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2


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
