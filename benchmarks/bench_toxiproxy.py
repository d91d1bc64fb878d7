"""What the embedded Toxiproxy costs and how exactly it delays: echo round trips compared.

    python benchmarks/bench_toxiproxy.py [--mode process|thread] [--rounds 2000] [--slow 100]

(a) direct to the echo server, (b) through a proxy without toxics (overhead), (c) through a
latency toxic of 100 ms: the added latency minus the configured 100 ms (median, p99), i.e.
how late the toxic fires. Plus bulk throughput direct vs proxied. The echo server runs in its
own process so it does not share a GIL with the measuring client.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import statistics
import subprocess
import sys
import time

from pytest_resilience.toxiproxy import EmbeddedToxiproxy, ToxiproxyClient

_ECHO = """
import asyncio, sys
async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


def _round_trips(port: int, rounds: int, payload: bytes = b"x" * 64) -> list[float]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(65536))
            samples.append(time.perf_counter() - start)
    return samples


def _throughput(port: int, total: int = 20_000_000) -> float:
    """MB/s of a bulk echo (send and receive concurrently via non-blocking interleave)."""
    block = b"b" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setblocking(False)
        sent = received = 0
        start = time.perf_counter()
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while received < total:
            for _, mask in sel.select(timeout=10):
                if mask & selectors.EVENT_WRITE and sent < total:
                    with contextlib.suppress(BlockingIOError):
                        sent += sock.send(block[: total - sent])
                    if sent >= total:
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    with contextlib.suppress(BlockingIOError):
                        received += len(sock.recv(262144))
        elapsed = time.perf_counter() - start
        sel.close()
    return total / elapsed / 1e6


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def _ms(value: float) -> str:
    return f"{value * 1000:8.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["process", "thread"], default="process")
    parser.add_argument("--rounds", type=int, default=2000, help="round trips for (a) and (b)")
    parser.add_argument("--slow", type=int, default=100, help="round trips for (c)")
    parser.add_argument("--latency", type=int, default=100, help="latency toxic, ms")
    args = parser.parse_args()

    echo = subprocess.Popen(
        [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        echo_port = int(echo.stdout.readline())  # type: ignore[union-attr]
        with EmbeddedToxiproxy(mode=args.mode) as server:
            client = ToxiproxyClient(server.url)
            proxy = client.create_proxy("bench", "127.0.0.1:0", f"127.0.0.1:{echo_port}")
            _round_trips(echo_port, 200)  # warm up both paths
            _round_trips(proxy.port, 200)

            direct = _round_trips(echo_port, args.rounds)
            proxied = _round_trips(proxy.port, args.rounds)
            direct_mbs = _throughput(echo_port)
            proxied_mbs = _throughput(proxy.port)

            client.add_toxic("bench", "latency", latency=args.latency)
            slow = _round_trips(proxy.port, args.slow)
            base = statistics.median(proxied)
            excess = [rtt - base - args.latency / 1000 for rtt in slow]

        print(f"embedded toxiproxy ({args.mode} mode), 64-byte echo round trips")
        print(
            f"(a) direct        n={len(direct):5d} median {_ms(statistics.median(direct))}"
            f"  p99 {_ms(_p99(direct))}"
        )
        print(
            f"(b) proxy, no tox n={len(proxied):5d} median {_ms(statistics.median(proxied))}"
            f"  p99 {_ms(_p99(proxied))}"
        )
        overhead = statistics.median(proxied) - statistics.median(direct)
        ratio = statistics.median(proxied) / statistics.median(direct)
        print(f"    proxy overhead: median +{_ms(overhead)} per round trip ({ratio:.1f}x direct)")
        print(
            f"(c) latency {args.latency} ms n={len(slow):4d} added-minus-configured: median "
            f"{_ms(statistics.median(excess))}  p99 {_ms(_p99(excess))}"
            f"  min {_ms(min(excess))}"
        )
        print(
            f"bulk echo 20 MB: direct {direct_mbs:7.1f} MB/s, proxied {proxied_mbs:7.1f} MB/s"
            f" ({proxied_mbs / direct_mbs:.2f}x)"
        )
    finally:
        echo.stdin.close()  # type: ignore[union-attr]
        echo.wait(timeout=10)


if __name__ == "__main__":
    main()
