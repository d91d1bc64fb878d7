"""``python -m pytest_resilience.toxiproxy``: the embedded server as a standalone process.

Takes toxiproxy-server's main options (host, port, a populate config file) so it can stand in
for the Go binary in scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from pytest_resilience.toxiproxy.apierrors import ApiError
from pytest_resilience.toxiproxy.server import ToxiproxyServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_resilience.toxiproxy",
        description="Toxiproxy-compatible server (HTTP API v2) embedded in pytest-resilience.",
    )
    parser.add_argument("--host", default="localhost", help="API host (default localhost)")
    parser.add_argument("--port", type=int, default=8474, help="API port, 0 = free port")
    parser.add_argument("--config", type=Path, help="JSON file of proxies to populate at start")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (how a parent process ties the server's life to its own)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    config: object = None
    if args.config is not None:
        try:
            config = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--config {args.config}: {exc}")
    try:
        asyncio.run(_serve(args.host, args.port, config, args.exit_on_stdin_eof))
    except ApiError as exc:
        print(f"--config {args.config}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(host: str, port: int, config: object, exit_on_stdin_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if exit_on_stdin_eof:

        def watch_stdin() -> None:
            # os.read, not sys.stdin: a buffered reader blocked at exit aborts the interpreter.
            with contextlib.suppress(OSError):
                while os.read(0, 4096):
                    pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()
    server = ToxiproxyServer()
    url = await server.start(host, port)
    try:
        if config is not None:
            await server.populate(config)
        print(f"toxiproxy API listening on {url}", flush=True)
        await stop.wait()
    finally:
        await server.close()


if __name__ == "__main__":
    sys.exit(main())
