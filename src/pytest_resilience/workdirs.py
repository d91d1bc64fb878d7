"""Session work dirs (``pytest-resilience-*`` in the temp dir), and removing dead sessions' ones.

A session removes its own work dir at its end; a SIGKILLed one cannot, so its dir (pod logs,
the demo's Postgres and Redis data) would stay forever. Each dir therefore names its owner
in a small file: the pid *and* that process's start time, so a recycled pid never makes a
dead session look alive. ``--chaos-cleanup`` and every new session remove the dirs whose
owner is gone, the way stale volumes and cgroups are swept (see targets/local/volumes.py).

Only what can be proven dead is removed: a dir without a readable owner file (one being
created right now, or not made by this code) is left alone, as is one of another user, or one
with a mount still under it that is not a dead session's volume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["OWNER_FILE", "WORK_DIR_PREFIX", "SweptDir", "make_work_dir", "sweep_dead_work_dirs"]

log = logging.getLogger("pytest_resilience")

WORK_DIR_PREFIX = "pytest-resilience-"
OWNER_FILE = ".pytest-resilience-owner.json"
#: /proc start times have clock-tick (10 ms) resolution; equal within this is the same process.
_SAME_START_S = 0.05


@dataclass(frozen=True)
class SweptDir:
    """A dead session's work dir that was removed."""

    path: Path
    pid: int


def make_work_dir(base: Path | None = None) -> Path:
    """A fresh work dir (mode 0755) whose owner file names this process."""
    # 0755, not pytest's 0700 basetemp: the demo's Postgres drops root and must reach its data.
    path = Path(tempfile.mkdtemp(prefix=WORK_DIR_PREFIX, dir=base))
    path.chmod(0o755)
    me = psutil.Process()
    owner = json.dumps({"pid": me.pid, "started": me.create_time()})
    partial = path / f"{OWNER_FILE}.partial"
    partial.write_text(owner)
    partial.rename(path / OWNER_FILE)  # atomic: a sweeper never reads half a file
    return path


def sweep_dead_work_dirs(base: Path | None = None) -> list[SweptDir]:
    """Remove the work dirs in ``base`` (the temp dir) whose owning session is dead."""
    base = Path(base or tempfile.gettempdir())
    swept = []
    for path in sorted(base.glob(f"{WORK_DIR_PREFIX}*")):
        pid = _dead_owner(path)
        if pid is None:
            continue
        if _mounts_under(path):
            from .targets.local.volumes import sweep_stale_volumes

            sweep_stale_volumes()  # a dead session's volumes, if its guardian died too
            if mounts := _mounts_under(path):
                log.warning(
                    "work dir %s of dead session %d left: still mounted under it: %s",
                    path,
                    pid,
                    ", ".join(mounts),
                )
                continue
        problems = _remove_tree(path)
        if path.exists():
            log.warning("cannot remove work dir %s of dead session %d: %s", path, pid, problems)
            continue
        log.info("removed work dir %s of dead session %d", path, pid)
        swept.append(SweptDir(path, pid))
    return swept


def _remove_tree(path: Path) -> list[str]:
    """rmtree that goes on past what it cannot remove, and says what that was."""
    problems: list[str] = []
    if sys.version_info >= (3, 12):  # onerror is deprecated there
        shutil.rmtree(path, onexc=lambda _fn, name, exc: problems.append(f"{name}: {exc}"))
    else:
        shutil.rmtree(path, onerror=lambda _fn, name, exc: problems.append(f"{name}: {exc[1]}"))
    return problems


def _dead_owner(path: Path) -> int | None:
    """The pid of the dir's owner if that session is provably dead, else None."""
    try:
        if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.geteuid():
            return None
        owner = json.loads((path / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), float(owner["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        alive = abs(psutil.Process(pid).create_time() - started) < _SAME_START_S
    except psutil.NoSuchProcess:
        alive = False
    except psutil.Error:
        alive = True  # cannot tell: never remove a dir that might be in use
    return None if alive else pid


def _mounts_under(path: Path) -> list[str]:
    """Mount points inside ``path`` (rmtree would delete what lives on them)."""
    from .targets.local.mounts import mount_points

    inside = path.resolve()
    return [str(m) for m in mount_points() if m.is_relative_to(inside)]
