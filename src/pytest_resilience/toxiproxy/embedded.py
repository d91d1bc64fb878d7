"""Run the embedded Toxiproxy server in a daemon thread or in a child process.

The child process is the better home under pytest: proxy I/O then does not compete for the
test process's GIL, and a test that blocks on a socket cannot stall the proxy it is waiting
on. The thread is there for plain scripts and for when spawning is not wanted. The child
exits when its stdin closes, so a parent killed with SIGKILL leaves no listener behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Literal, final

from pytest_resilience.errors import ConfigError, FaultError
from pytest_resilience.toxiproxy.server import ToxiproxyServer

#: The line the child prints on stdout once the API listens; the parent reads the URL from it.
READY_PATTERN = re.compile(r"toxiproxy API listening on (http://\S+)")


@final
class EmbeddedToxiproxy:
    """The package's Toxiproxy-compatible server, started and stopped from synchronous code."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        mode: Literal["thread", "process"] = "thread",
        startup_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        if mode not in ("thread", "process"):
            raise ConfigError(f"mode must be 'thread' or 'process', got {mode!r}", field="mode")
        self.mode = mode
        self.startup_timeout = startup_timeout
        self._url: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ToxiproxyServer | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` with the real port; only valid once started."""
        if self._url is None:
            raise FaultError("embedded toxiproxy is not running: call start() first")
        return self._url

    @property
    def pid(self) -> int:
        """The process serving the API (this one in thread mode)."""
        return self._process.pid if self._process is not None else os.getpid()

    def start(self) -> EmbeddedToxiproxy:
        """Start serving; returns once the API listens (FaultError if it does not in time)."""
        if self._url is None:
            if self.mode == "process":
                self._start_process()
            else:
                self._start_thread()
        return self

    def stop(self) -> None:
        """Stop every proxy and the API; idempotent."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.stdin is not None:  # a pipe: its EOF makes the child stop cleanly
                process.stdin.close()
            try:
                process.wait(timeout=self.startup_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._thread is not None and self._loop is not None and self._server is not None:
            loop, server = self._loop, self._server
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(self.startup_timeout)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(self.startup_timeout)
            self._thread = self._loop = self._server = None
        self._url = None

    def __enter__(self) -> EmbeddedToxiproxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_thread(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        server = ToxiproxyServer()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._url = loop.run_until_complete(server.start(self.host, self.port))
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=serve, name="embedded-toxiproxy", daemon=True)
        thread.start()
        if not ready.wait(self.startup_timeout):
            raise FaultError(f"embedded toxiproxy did not listen within {self.startup_timeout}s")
        if failure:
            raise FaultError(
                f"embedded toxiproxy could not listen on {self.host}:{self.port}: {failure[0]}"
            ) from failure[0]
        self._thread, self._loop, self._server = thread, loop, server

    def _start_process(self) -> None:
        command = [
            sys.executable,
            "-m",
            "pytest_resilience.toxiproxy",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--exit-on-stdin-eof",
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        output = b""
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([process.stdout], [], [], left)
            if not readable:
                break
            data = os.read(process.stdout.fileno(), 4096)
            if not data:
                break
            output += data
            match = READY_PATTERN.search(output.decode(errors="replace"))
            if match:
                self._process, self._url = process, match.group(1)
                return
        process.kill()
        process.wait()
        with contextlib.suppress(OSError):
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        raise FaultError(
            f"embedded toxiproxy child ({' '.join(command)}) did not report listening within "
            f"{self.startup_timeout}s (exit code {process.returncode}); its stderr says why"
        )
