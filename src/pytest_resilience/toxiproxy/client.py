"""The one module that touches toxiproxy-python, so its quirks stay here.

toxiproxy-python (0.1.x, 2019) keeps the server address as class attributes of
``APIConsumer`` and calls ``requests`` without a timeout. Hence:

- every call binds ``APIConsumer.host/port`` to this client's server under one lock, so two
  clients for two servers (say an external one and the embedded one) never cross wires;
- ``toxiproxy.api`` is given a stand-in for its ``requests`` module that adds a timeout and
  turns connection failures and 5xx answers into this package's errors (the library only
  checks 400/404/409). The real ``requests`` module is not touched.

Toxic types and attribute names are checked against the table in ``toxics.py`` before any
request, so a misspelt ``latnecy`` fails with the list of valid names instead of a silent
no-op (toxiproxy ignores unknown attributes).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final
from urllib.parse import urlsplit

import requests
import toxiproxy.api
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy as _LibProxy
from toxiproxy.server import Toxiproxy as _LibToxiproxy

from pytest_resilience.errors import ConfigError, FaultError
from pytest_resilience.toxiproxy.toxics import check_toxic as _check_toxic

DEFAULT_TIMEOUT = 5.0


class ToxiproxyAPIError(FaultError):
    """The Toxiproxy server refused a request (4xx/5xx), with its status and message."""

    def __init__(self, status: int, error: str, *, request: str) -> None:
        self.status = status
        self.error = error
        super().__init__(f"toxiproxy {request}: {status} {error}")


class ToxiproxyUnreachable(FaultError):
    """No answer from the Toxiproxy server (refused, timed out).

    ``refused`` tells the two apart: a refused connection means nothing listens at that
    address (the server is gone, and its proxies and toxics with it, as they live in memory);
    a timeout may be a network problem between us and a server that still runs.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@final
@dataclass(frozen=True)
class ToxicInfo:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ToxicInfo:
        return cls(
            name=data["name"],
            type=data["type"],
            stream=data.get("stream", "downstream"),
            toxicity=float(data.get("toxicity", 1.0)),
            attributes=dict(data.get("attributes") or {}),
        )


@final
@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[ToxicInfo, ...] = ()

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The real listening port (toxiproxy reports it even when asked for port 0)."""
        return int(self.listen.rpartition(":")[2])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProxyInfo:
        return cls(
            name=data["name"],
            listen=data["listen"],
            upstream=data["upstream"],
            enabled=bool(data["enabled"]),
            toxics=tuple(ToxicInfo.from_json(t) for t in data.get("toxics") or ()),
        )


class _TimeoutRequests:
    """Stands in for ``requests`` inside ``toxiproxy.api`` only: adds a timeout, maps errors."""

    def __init__(self) -> None:
        self.timeout = DEFAULT_TIMEOUT

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._call("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._call("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        return self._call("DELETE", url, **kwargs)

    def _call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = requests.request(method, url, **kwargs)
        except requests.RequestException as exc:
            refused = isinstance(exc, requests.ConnectionError) and not isinstance(
                exc, requests.Timeout
            )
            raise ToxiproxyUnreachable(f"toxiproxy {method} {url}: {exc}", refused=refused) from exc
        if response.status_code >= 500:
            raise ToxiproxyAPIError(
                response.status_code, _error_text(response.content), request=f"{method} {url}"
            )
        return response


_REQUESTS = _TimeoutRequests()
toxiproxy.api.requests = _REQUESTS  # the library calls its module's `requests`: ours now
_API_LOCK = threading.RLock()


@final
class ToxiproxyClient:
    """A Toxiproxy server at ``url``, driven through toxiproxy-python."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(
                f"toxiproxy URL must look like http://host:port, got {url!r}", field="toxiproxy_url"
            )
        self.url = f"http://{parts.netloc}"
        self._host = parts.hostname
        self._port = parts.port or 8474
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ToxiproxyClient({self.url!r})"

    # -- proxies ----------------------------------------------------------------------------

    def version(self) -> str:
        with self._api("GET /version"):
            raw: str = APIConsumer.get("/version").content.decode().strip()
        try:  # toxiproxy >= 2.6 answers {"version": ...}, older ones plain text
            return str(json.loads(raw)["version"])
        except (ValueError, KeyError, TypeError):
            return raw

    def proxies(self) -> dict[str, ProxyInfo]:
        with self._api("GET /proxies"):
            data = APIConsumer.get("/proxies").json()
        return {name: ProxyInfo.from_json(value) for name, value in data.items()}

    def get_proxy(self, name: str) -> ProxyInfo | None:
        """The proxy, or None when the server has no proxy of that name."""
        try:
            with self._api(f"GET /proxies/{name}"):
                return ProxyInfo.from_json(APIConsumer.get(f"/proxies/{name}").json())
        except ToxiproxyAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def create_proxy(
        self, name: str, listen: str, upstream: str, *, enabled: bool = True
    ) -> ProxyInfo:
        """A new proxy; ``listen`` may use port 0, the result carries the real port."""
        with self._api(f"create proxy {name!r}"):
            try:
                proxy = _LibToxiproxy().create(
                    upstream=upstream, name=name, listen=listen, enabled=enabled
                )
            except ProxyExists as exc:
                raise ToxiproxyAPIError(
                    409, "proxy already exists", request=f"create proxy {name!r}"
                ) from exc
        return ProxyInfo(proxy.name, proxy.listen, proxy.upstream, proxy.enabled)

    def delete_proxy(self, name: str) -> None:
        with self._api(f"DELETE /proxies/{name}"):
            _lib_proxy(name).destroy()

    def populate(self, proxies: Sequence[Mapping[str, Any]]) -> list[ProxyInfo]:
        """POST /populate: create or replace proxies (name, listen, upstream[, enabled])."""
        with self._api("POST /populate"):
            data = APIConsumer.post("/populate", json=list(map(dict, proxies))).json()
        return [ProxyInfo.from_json(item) for item in data["proxies"]]

    def disable(self, proxy: str) -> None:
        """Take the proxy down: its listener and live connections close."""
        with self._api(f"disable {proxy!r}"):
            _lib_proxy(proxy).disable()

    def enable(self, proxy: str) -> None:
        with self._api(f"enable {proxy!r}"):
            _lib_proxy(proxy).enable()

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        with self._api("POST /reset"):
            _LibToxiproxy().reset()

    # -- toxics -----------------------------------------------------------------------------

    def add_toxic(
        self,
        proxy: str,
        type: str,  # the API's own field name
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
        **attributes: int,
    ) -> ToxicInfo:
        """Add a toxic after checking type, attribute names, stream and toxicity locally."""
        _check_toxic(type, stream, toxicity, attributes)
        name = name or f"{type}_{stream}"
        with self._api(f"add toxic {name!r} to {proxy!r}"):
            _lib_proxy(proxy).add_toxic(
                type=type, stream=stream, name=name, toxicity=toxicity, attributes=attributes
            )
            data = APIConsumer.get(f"/proxies/{proxy}/toxics/{name}").json()
        return ToxicInfo.from_json(data)

    def update_toxic(
        self, proxy: str, name: str, *, toxicity: float | None = None, **attributes: int
    ) -> ToxicInfo:
        """Change a live toxic's attributes or toxicity; connections see it at once."""
        current = next((t for t in self.toxics(proxy) if t.name == name), None)
        if current is None:
            raise ToxiproxyAPIError(404, "toxic not found", request=f"update toxic {name!r}")
        new_toxicity = current.toxicity if toxicity is None else toxicity
        _check_toxic(current.type, current.stream, new_toxicity, attributes)
        body = {"toxicity": new_toxicity, "attributes": attributes}
        with self._api(f"update toxic {name!r} of {proxy!r}"):
            data = APIConsumer.post(f"/proxies/{proxy}/toxics/{name}", json=body).json()
        return ToxicInfo.from_json(data)

    def remove_toxic(self, proxy: str, name: str) -> None:
        with self._api(f"remove toxic {name!r} from {proxy!r}"):
            _lib_proxy(proxy).destroy_toxic(name)

    def toxics(self, proxy: str) -> list[ToxicInfo]:
        with self._api(f"GET /proxies/{proxy}/toxics"):
            data = APIConsumer.get(f"/proxies/{proxy}/toxics").json()
        return [ToxicInfo.from_json(item) for item in data]

    # -- the library's global state ---------------------------------------------------------

    @contextlib.contextmanager
    def _api(self, request: str) -> Iterator[None]:
        """Point toxiproxy-python at this server for one call; map its exceptions."""
        with _API_LOCK:
            saved = (APIConsumer.host, APIConsumer.port, _REQUESTS.timeout)
            APIConsumer.host, APIConsumer.port = self._host, self._port
            _REQUESTS.timeout = self.timeout
            try:
                yield
            except (NotFound, ProxyExists, InvalidToxic) as exc:
                status = {NotFound: 404, ProxyExists: 409, InvalidToxic: 400}[type(exc)]
                raw = exc.args[0] if exc.args else b""
                raise ToxiproxyAPIError(status, _error_text(raw), request=request) from exc
            finally:
                APIConsumer.host, APIConsumer.port, _REQUESTS.timeout = saved


def _lib_proxy(name: str) -> _LibProxy:
    """toxiproxy-python's Proxy object; only its name is used by the calls we make."""
    return _LibProxy(name=name, upstream="", enabled=True, listen="")


def _error_text(raw: bytes | str) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        return str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        return text.strip()
