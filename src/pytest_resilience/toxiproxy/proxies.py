"""Proxies that really forward TCP, with each direction of each connection run through toxics.

A connection has two pipes: ``upstream`` (client -> server) and ``downstream`` (server ->
client). Each pipe has a reader that timestamps chunks as they arrive and a writer that passes
them through the pipe's toxic runs in order. One direction reaching EOF half-closes the other
side; the connection is closed once both are done, or at once by a toxic (timeout, reset_peer,
limit_data) or by disabling the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Iterable

from pytest_resilience.toxiproxy import apierrors
from pytest_resilience.toxiproxy.toxics import ServedToxic, ToxicRun, draw_run

logger = logging.getLogger("pytest_resilience.toxiproxy")

_READ_SIZE = 32 * 1024
_QUEUE_CHUNKS = 64  # bounded, so a slow toxic pushes back on the sender through TCP


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) as Go's net package reads it; raises ApiError 400."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise apierrors.BAD_REQUEST_BODY.detail(f"invalid address {address!r}, want host:port")
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Proxy:
    """One named proxy: a listener, its upstream, its toxics, its live connections."""

    def __init__(self, name: str, listen: str, upstream: str) -> None:
        split_address(listen)
        split_address(upstream)
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, ServedToxic] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [toxic.to_json() for toxic in self.toxics.values()],
        }

    async def start(self) -> None:
        if self._server is not None:
            return
        host, port = split_address(self.listen)
        try:
            self._server = await asyncio.start_server(self._accept, host, port)
        except OSError as exc:
            message = f"listen tcp {self.listen}: {exc.strerror or exc}"
            raise apierrors.ApiError(message, 500) from exc
        bound = self._server.sockets[0].getsockname()
        self.listen = join_address(bound[0], bound[1])  # port 0 becomes the real port
        self.enabled = True
        logger.info("proxy %s listening on %s -> %s", self.name, self.listen, self.upstream)

    async def stop(self) -> None:
        """Close the listener and every live connection (toxiproxy's 'down')."""
        self.enabled = False
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.close_connection()
        if server is not None:
            await server.wait_closed()

    def add_toxic(self, toxic: ServedToxic) -> None:
        if toxic.name in self.toxics:
            raise apierrors.TOXIC_EXISTS
        self.toxics[toxic.name] = toxic
        for connection in self._connections:
            connection.pipe(toxic.stream).attach(toxic)

    def update_toxic(self, toxic: ServedToxic, *, redraw: bool) -> None:
        """Attributes are read live by runs; timers and a new toxicity need fresh runs."""
        if redraw or toxic.type in ("timeout", "reset_peer"):
            for connection in self._connections:
                pipe = connection.pipe(toxic.stream)
                pipe.detach(toxic.name)
                pipe.attach(toxic)
                pipe.reorder(self.toxics)

    def remove_toxic(self, name: str) -> ServedToxic:
        toxic = self.toxics.pop(name, None)
        if toxic is None:
            raise apierrors.TOXIC_NOT_FOUND
        for connection in self._connections:
            connection.pipe(toxic.stream).detach(name)
        return toxic

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.run(self.toxics.values())
        finally:
            self._connections.discard(connection)


class _Pipe:
    """One direction of a connection: reader task, bounded queue, writer through toxics."""

    def __init__(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._connection = connection
        self._reader = reader
        self._writer = writer
        self.runs: dict[str, ToxicRun] = {}
        self._queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue(_QUEUE_CHUNKS)

    def attach(self, toxic: ServedToxic) -> None:
        run = draw_run(toxic, self._connection)
        if run is not None:
            self.runs[toxic.name] = run
            run.attach()

    def detach(self, name: str) -> None:
        run = self.runs.pop(name, None)
        if run is not None:
            run.detach()

    def reorder(self, order: Iterable[str]) -> None:
        self.runs = {name: self.runs[name] for name in order if name in self.runs}

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await self._reader.read(_READ_SIZE):
                await self._queue.put((chunk, loop.time()))
        except OSError:
            self._connection.close_connection()
            return
        await self._queue.put(None)

    async def write(self) -> None:
        try:
            while (item := await self._queue.get()) is not None:
                chain = list(self.runs.values())
                await self._through(chain, 0, item[0], item[1])
            for run in list(self.runs.values()):
                await run.close()
            if self._writer.can_write_eof():
                self._writer.write_eof()
        except OSError:
            self._connection.close_connection()
            return
        self._connection.pipe_done()

    async def _through(self, chain: list[ToxicRun], index: int, chunk: bytes, at: float) -> None:
        if index == len(chain):
            self._writer.write(chunk)
            await self._writer.drain()
            return

        async def emit(data: bytes) -> None:
            await self._through(chain, index + 1, data, at)

        await chain[index].data(chunk, at, emit)

    def detach_all(self) -> None:
        for run in self.runs.values():
            run.detach()


class _Connection:
    def __init__(
        self, proxy: Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._proxy = proxy
        self._client = (reader, writer)
        self._pipes: dict[str, _Pipe] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.StreamWriter] = [writer]
        self._done = asyncio.Event()
        self._pipes_done = 0
        self._closing = False

    def pipe(self, stream: str) -> _Pipe:
        return self._pipes[stream]

    async def run(self, toxics: Iterable[ServedToxic]) -> None:
        client_reader, client_writer = self._client
        host, port = split_address(self._proxy.upstream)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            logger.warning("proxy %s: upstream %s: %s", self._proxy.name, self._proxy.upstream, exc)
            client_writer.close()
            return
        self._writers.append(up_writer)
        if self._closing:  # the proxy went down while we dialled
            up_writer.close()
            return
        self._pipes = {
            "upstream": _Pipe(self, client_reader, up_writer),
            "downstream": _Pipe(self, up_reader, client_writer),
        }
        for toxic in toxics:
            self.pipe(toxic.stream).attach(toxic)
        loop = asyncio.get_running_loop()
        for pipe in self._pipes.values():
            self._tasks += [loop.create_task(pipe.read()), loop.create_task(pipe.write())]
        try:
            await self._done.wait()
        finally:
            self.close_connection()

    def pipe_done(self) -> None:
        self._pipes_done += 1
        if self._pipes_done == 2:
            self.close_connection()

    def close_connection(self, *, reset: bool = False) -> None:
        """Close both sides; with ``reset`` the peers see RST (SO_LINGER 0), not FIN."""
        if self._closing:
            return
        self._closing = True
        for pipe in self._pipes.values():
            pipe.detach_all()
        for task in self._tasks:
            task.cancel()  # the calling pipe task too: it stops at its next await
        for writer in self._writers:
            _close_writer(writer, reset=reset)
        self._done.set()


def _close_writer(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()
