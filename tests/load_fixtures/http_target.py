"""A small real HTTP target for the load tests and benchmark: fails and slows on request.

``python http_target.py [--port 0] [--reuse-port] [--fail-every K] [--delay-ms D]``
prints ``{"port": N}`` on stdout once it listens. ``GET /`` answers 200, or 500 for every
K-th request (so the failure share is exactly 1/K), after D ms. ``POST /_control?
fail_every=K&delay_ms=D`` changes both while running; ``GET /_stats`` reports the counts.
Several replicas can share one port with ``--reuse-port``, like the local target's pods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from aiohttp import web


class _Target:
    def __init__(self, fail_every: int, delay_ms: float) -> None:
        self.fail_every = fail_every
        self.delay_ms = delay_ms
        self.requests = 0
        self.failures = 0

    async def root(self, request: web.Request) -> web.Response:
        self.requests += 1
        failing = self.fail_every > 0 and self.requests % self.fail_every == 0
        if self.delay_ms > 0:
            await asyncio.sleep(self.delay_ms / 1000.0)
        if failing:
            self.failures += 1
            return web.Response(status=500, text="injected failure\n")
        return web.Response(text="ok\n")

    async def control(self, request: web.Request) -> web.Response:
        if "fail_every" in request.query:
            self.fail_every = int(request.query["fail_every"])
        if "delay_ms" in request.query:
            self.delay_ms = float(request.query["delay_ms"])
        return web.json_response({"fail_every": self.fail_every, "delay_ms": self.delay_ms})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "failures": self.failures})


async def _serve(args: argparse.Namespace) -> None:
    target = _Target(args.fail_every, args.delay_ms)
    app = web.Application()
    app.router.add_get("/", target.root)
    app.router.add_post("/_control", target.control)
    app.router.add_get("/_stats", target.stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, reuse_port=args.reuse_port, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # the port chosen for port 0
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    asyncio.run(_serve(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
