"""Run test code as an unprivileged user ("nobody" when we are root, ourselves otherwise).

A machine may not let "nobody" run this interpreter at all: a venv or a checkout under a 0700
directory (a fresh clone under ``mktemp -d``, a home directory) cannot be entered by another
user. That is a missing precondition of the machine, not a defect of the code under test, so
the tests skip naming it instead of failing with a PermissionError from ``subprocess``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "local_services"
UNPRIVILEGED_USER = "nobody"


def as_whom() -> dict[str, str]:
    """``subprocess`` keyword arguments that drop root, or nothing when we are not root."""
    return {"user": UNPRIVILEGED_USER} if os.geteuid() == 0 else {}


@cache
def why_unprivileged_cannot_run() -> str | None:
    """Why the unprivileged user cannot import the project with ``sys.executable``, or None."""
    if os.geteuid() != 0:
        return None
    probe = (
        "import os, sys, pytest_resilience\n"
        f"here = {str(HERE)!r}\n"
        "if not os.access(os.path.join(here, 'hog.py'), os.R_OK):\n"
        "    sys.exit(f'cannot read the test services in {here}')\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
            user=UNPRIVILEGED_USER,
        )
    except PermissionError as exc:
        return (
            f'user "{UNPRIVILEGED_USER}" cannot execute {sys.executable} ({exc.strerror}): '
            "the interpreter or a directory above it is not accessible to other users "
            "(e.g. a venv under a 0700 directory such as mktemp -d or /root)"
        )
    except KeyError:
        return f'no user "{UNPRIVILEGED_USER}" on this machine'
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [done.stdout.strip()])[-1]
        return (
            f'user "{UNPRIVILEGED_USER}" cannot run `{sys.executable} -c "import '
            f'pytest_resilience"` here: {last}'
        )
    return None


def require_unprivileged_run() -> None:
    """Skip the calling test, naming why, when the unprivileged user cannot run our code."""
    reason = why_unprivileged_cannot_run()
    if reason is not None:
        pytest.skip(reason)


def run_unprivileged(
    script: str, services: str, *, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (argv: services file, work dir) unprivileged; fail on a non-zero exit.

    ``@HERE@`` in ``services`` names the test programs in ``local_services/``. Skips, naming
    why, when the unprivileged user cannot run this interpreter and project at all.
    """
    require_unprivileged_run()
    with shared_place() as place:
        (place / "services.yaml").write_text(services.replace("@HERE@", str(HERE)))
        done = subprocess.run(
            [sys.executable, "-c", script, place / "services.yaml", place / "work"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=place,
            **as_whom(),
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done


@contextmanager
def shared_place(prefix: str = "pr-noroot-") -> Iterator[Path]:
    """A fresh directory the unprivileged user can write to, removed afterwards."""
    # Not tmp_path: the unprivileged user must reach it, and pytest keeps its base dir 0700.
    place = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        place.chmod(0o777)
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)
