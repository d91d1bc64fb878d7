"""A server binary run for the length of a test session: free port, readiness, clean stop.

Shared by the managed Prometheus and Alertmanager. Each gets its own temporary working
directory (config, storage, log) that is removed on stop, and a finalizer that kills the
process if the interpreter exits without ``stop()``, so no server outlives the session.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ..errors import ConfigError, ResilienceError
from ..ports import free_port

__all__ = ["DaemonError", "ManagedDaemon", "free_port"]

log = logging.getLogger("pytest_resilience.prometheus")

_POLL_S = 0.05
_PORT_ATTEMPTS = 3
_ERROR_LEVEL = "level=error"  # logfmt; Prometheus 3 writes ERROR
_ERROR_LINES = 5


class DaemonError(ResilienceError):
    """The server binary did not start, or died while we waited for it."""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class ManagedDaemon:
    """Base: subclasses set ``binary`` and implement ``_write_config`` and ``_argv``."""

    binary: str = ""
    ready_path: str = "/-/ready"
    display_name: str = ""

    def __init__(self, *, binary: str | None = None, startup_timeout_s: float = 20.0) -> None:
        self.binary = binary or self.binary
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., ManagedDaemon] | None = None

    @classmethod
    def available(cls, binary: str | None = None) -> bool:
        """Whether the server binary is on PATH (tests skip, or fail under CI, when not)."""
        return shutil.which(binary or cls.binary) is not None

    @property
    def address(self) -> str:
        if self.port is None:
            raise DaemonError(f"{self.display_name} is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self.running:
            return self
        path = shutil.which(self.binary)
        if path is None:
            raise ConfigError(
                f"{self.binary!r} is not on PATH; install the Debian package "
                f"({self.display_name}) or give binary=",
                field="binary",
            )
        self.workdir = Path(tempfile.mkdtemp(prefix=f"resilience-{self.binary}-"))
        try:
            self._prepare(self.workdir)
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self.port = free_port()
                self._spawn(path)
                try:
                    self.wait_ready(self.startup_timeout_s)
                    return self
                except DaemonError as exc:
                    # The port may have been taken between free_port() and bind: retry.
                    if attempt < _PORT_ATTEMPTS and "address already in use" in str(exc):
                        log.info("%s: port %s taken, retrying", self.display_name, self.port)
                        self._terminate()
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove its working directory; safe to call twice."""
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.port = None

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll the readiness endpoint until it answers 200, the process dies, or time is up."""
        deadline = time.monotonic() + timeout
        url = self.url + self.ready_path
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise DaemonError(
                    f"{self.display_name} exited before it was ready "
                    f"(rc={self._proc.returncode if self._proc else None}); "
                    f"log tail:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{self.display_name} at {self.url} not ready within {timeout:g} s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def log_tail(self, lines: int = 15) -> str:
        """The server's error lines, then its last ``lines`` lines.

        The line that names the cause (the bad rule file, the busy port) comes before a
        shutdown whose length varies from run to run; a plain tail loses it now and then.
        """
        if self.workdir is None or not (self.workdir / "server.log").exists():
            return "(no log)"
        text = (self.workdir / "server.log").read_text(errors="replace").splitlines()
        tail = text[-lines:]
        earlier = text[: len(text) - len(tail)]
        errors = [line for line in earlier if _ERROR_LEVEL in line.lower()][-_ERROR_LINES:]
        return "\n".join([*errors, "...", *tail] if errors else tail)

    # -- subclass hooks ------------------------------------------------------------------

    def _prepare(self, workdir: Path) -> None:
        """Write whatever does not depend on the port."""

    def _argv(self, path: str) -> list[str]:
        raise NotImplementedError

    # -- process handling ------------------------------------------------------------------

    def _spawn(self, path: str) -> None:
        assert self.workdir is not None
        argv = self._argv(path)
        log.debug("starting %s", " ".join(argv))
        self._log_file = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop
        self._proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not the server
        )
        self._finalizer = weakref.finalize(self, _kill, self._proc)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop on SIGTERM; killing", self.display_name)
                    _kill(proc)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
