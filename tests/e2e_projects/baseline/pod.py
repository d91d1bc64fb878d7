"""A tiny HTTP pod: 200 to everything (v1), or 500 to all but /readyz (v2, ``--fail``).

Binds the service port with SO_REUSEPORT, as every replica of a local service must.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal


async def serve(port: int, fail: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split(b" ")[1] if request.count(b" ") >= 2 else b"/"
            status = 500 if fail and path != b"/readyz" else 200
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_port=True)
    print(f"{os.environ.get('POD_NAME', '?')} serving on {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.fail))
