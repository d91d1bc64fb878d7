"""Which Toxiproxy to use: the one given, Shopify's binary on PATH, or the embedded server.

The report says which one ran, because figures measured through the Go binary and through
the embedded Python server are not the same experiment.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, final
from urllib.parse import urlsplit

from pytest_resilience.errors import ConfigError, FaultError
from pytest_resilience.toxiproxy.embedded import EmbeddedToxiproxy

ServerKind = Literal["external", "binary", "embedded"]
BINARY_NAME = "toxiproxy-server"


@final
@dataclass
class ToxiproxyServerHandle:
    """A running Toxiproxy: its URL, what it is, and how to stop it (no-op if external)."""

    url: str
    kind: ServerKind
    version: str = ""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def __enter__(self) -> ToxiproxyServerHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def resolve_server(
    url: str | None = None,
    *,
    binary: str | None = BINARY_NAME,
    embedded_mode: Literal["thread", "process"] = "process",
    timeout: float = 10.0,
) -> ToxiproxyServerHandle:
    """``url`` (--toxiproxy-url) if given, else ``binary`` on PATH, else the embedded server.

    ``binary=None`` skips the PATH lookup. The caller owns the handle and stops it.
    """
    if url:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(
                f"must look like http://host:port, got {url!r}", field="--toxiproxy-url"
            )
        base = f"http://{parts.netloc}"
        version = _version(base, timeout=timeout)
        if version is None:
            raise FaultError(
                f"--toxiproxy-url {url}: no Toxiproxy answered GET /version within {timeout}s"
            )
        return ToxiproxyServerHandle(base, "external", version)
    path = shutil.which(binary) if binary else None
    if path is not None:
        return _start_binary(path, timeout=timeout)
    server = EmbeddedToxiproxy("127.0.0.1", 0, mode=embedded_mode, startup_timeout=timeout)
    server.start()
    return ToxiproxyServerHandle(
        server.url, "embedded", _version(server.url, timeout=timeout) or "", server.stop
    )


def _start_binary(path: str, *, timeout: float) -> ToxiproxyServerHandle:
    """Start toxiproxy-server on a free port; retried because the port is picked before bind."""
    for _attempt in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        process = subprocess.Popen(
            [path, "-host", "127.0.0.1", "-port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            version = _version(base, timeout=0.5)
            if version is not None:
                return ToxiproxyServerHandle(base, "binary", version, _stopper(process))
            time.sleep(0.05)  # poll interval while the binary starts, not a synchronisation
        _stopper(process)()
    raise FaultError(f"{path} did not answer on 127.0.0.1 within {timeout}s (3 attempts)")


def _stopper(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    return stop


def _version(base: str, *, timeout: float) -> str | None:
    """GET /version, or None when nothing answers (plain urllib: no client state involved)."""
    try:
        with urllib.request.urlopen(f"{base}/version", timeout=timeout) as response:
            raw: str = response.read().decode(errors="replace").strip()
    except (OSError, urllib.error.URLError):
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(raw)["version"])
    return raw
