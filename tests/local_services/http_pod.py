"""A tiny HTTP pod for the local target's tests (stdlib asyncio only, starts fast).

Binds the shared service port with SO_REUSEPORT, like every replica of a real service
must, and optionally its own pod port. Serves /readyz and /whoami (pod name, version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pod-port", type=int)
    parser.add_argument("--version", default=os.environ.get("VERSION", ""))
    parser.add_argument("--crash-after-ready", type=float, help="exit 3 this long after /readyz")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    args = parser.parse_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    pod = os.environ.get("POD_NAME", "?")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
            if path == "/readyz":
                status, body = 200, b"ok"
                if args.crash_after_ready:
                    loop.call_later(args.crash_after_ready, os._exit, 3)
            elif path == "/whoami":
                status = 200
                body = json.dumps({"pod": pod, "version": args.version}).encode()
            else:
                status, body = 404, b"not found"
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", args.port, reuse_port=True)]
    if args.pod_port:
        servers.append(await asyncio.start_server(handle, "127.0.0.1", args.pod_port))
    print(f"{pod} serving on {args.port} (pod port {args.pod_port})", flush=True)
    stop = asyncio.Event()
    if not args.ignore_term:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
