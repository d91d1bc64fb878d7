"""The Toxiproxy v2 HTTP API (Shopify's routes, JSON shapes and statuses) over asyncio.

Any Toxiproxy client, toxiproxy-python first, works against it unchanged. Deliberate
differences from the Go server: a proxy created without ``listen`` binds 127.0.0.1:0 rather
than every interface, and a toxicity outside [0, 1] is refused (400) instead of silently
meaning "always" or "never".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import final

from aiohttp import web

from pytest_resilience.toxiproxy import apierrors
from pytest_resilience.toxiproxy.proxies import Proxy, join_address
from pytest_resilience.toxiproxy.toxics import apply_update, parse_toxic

logger = logging.getLogger("pytest_resilience.toxiproxy")

#: The toxiproxy API level served, with build metadata saying which server it is.
VERSION = "2.9.0+pytest-resilience"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@final
class ToxiproxyServer:
    """Proxies plus the HTTP API that manages them, all on the running event loop."""

    def __init__(self) -> None:
        self.proxies: dict[str, Proxy] = {}
        self._lock = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 8474) -> str:
        """Serve the API on host:port (0 = a free port); returns the base URL."""
        app = web.Application(middlewares=[_api_errors])
        app.add_routes(
            [
                web.get("/version", self._version),
                web.post("/reset", self._reset),
                web.post("/populate", self._populate),
                web.get("/proxies", self._list_proxies),
                web.post("/proxies", self._create_proxy),
                web.get("/proxies/{proxy}", self._get_proxy),
                web.post("/proxies/{proxy}", self._update_proxy),
                web.delete("/proxies/{proxy}", self._delete_proxy),
                web.get("/proxies/{proxy}/toxics", self._list_toxics),
                web.post("/proxies/{proxy}/toxics", self._create_toxic),
                web.get("/proxies/{proxy}/toxics/{toxic}", self._get_toxic),
                web.post("/proxies/{proxy}/toxics/{toxic}", self._update_toxic),
                web.delete("/proxies/{proxy}/toxics/{toxic}", self._delete_toxic),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{join_address(bound[0], bound[1])}"
        logger.info("toxiproxy API listening on %s", self.url)
        return self.url

    async def close(self) -> None:
        """Stop every proxy (listeners and connections), then the API."""
        async with self._lock:
            await asyncio.gather(*(proxy.stop() for proxy in self.proxies.values()))
            self.proxies.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def populate(self, body: object) -> list[Proxy]:
        """Create or replace the proxies of a populate body (also used for --config)."""
        if not isinstance(body, list):
            raise apierrors.BAD_REQUEST_BODY.detail("expected a JSON array of proxies")
        specs = [_proxy_spec(item) for item in body]
        done: list[Proxy] = []
        async with self._lock:
            for name, listen, upstream, enabled in specs:
                existing = self.proxies.get(name)
                if existing is not None and (
                    existing.listen != listen or existing.upstream != upstream
                ):
                    await existing.stop()
                    del self.proxies[name]
                    existing = None
                if existing is None:
                    existing = await self._add(name, listen, upstream, enabled)
                done.append(existing)
        return done

    async def _add(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        if name in self.proxies:
            raise apierrors.PROXY_EXISTS
        proxy = Proxy(name, listen, upstream)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    def _proxy(self, request: web.Request) -> Proxy:
        proxy = self.proxies.get(request.match_info["proxy"])
        if proxy is None:
            raise apierrors.PROXY_NOT_FOUND
        return proxy

    # -- handlers ---------------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def _reset(self, request: web.Request) -> web.Response:
        async with self._lock:
            for proxy in self.proxies.values():
                for name in list(proxy.toxics):
                    proxy.remove_toxic(name)
                await proxy.start()
        return web.Response(status=204)

    async def _populate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            proxies = await self.populate(body)
        except apierrors.ApiError as exc:
            return web.json_response({**exc.to_json(), "proxies": []}, status=exc.status)
        return web.json_response({"proxies": [p.to_json() for p in proxies]}, status=201)

    async def _list_proxies(self, request: web.Request) -> web.Response:
        return web.json_response({name: p.to_json() for name, p in self.proxies.items()})

    async def _create_proxy(self, request: web.Request) -> web.Response:
        name, listen, upstream, enabled = _proxy_spec(await _json_body(request))
        async with self._lock:
            proxy = await self._add(name, listen, upstream, enabled)
        return web.json_response(proxy.to_json(), status=201)

    async def _get_proxy(self, request: web.Request) -> web.Response:
        return web.json_response(self._proxy(request).to_json())

    async def _update_proxy(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise apierrors.BAD_REQUEST_BODY.detail("expected a JSON object")
        async with self._lock:
            proxy = self._proxy(request)
            listen = _string(body, "listen", proxy.listen)
            upstream = _string(body, "upstream", proxy.upstream)
            enabled = body.get("enabled", proxy.enabled)
            if not isinstance(enabled, bool):
                raise apierrors.BAD_REQUEST_BODY.detail("enabled must be true or false")
            Proxy(proxy.name, listen, upstream)  # validates both addresses before acting
            if listen != proxy.listen or upstream != proxy.upstream:
                was_enabled = proxy.enabled
                await proxy.stop()
                proxy.listen, proxy.upstream = listen, upstream
                if was_enabled and enabled:
                    await proxy.start()
            if enabled and not proxy.enabled:
                await proxy.start()
            elif not enabled and proxy.enabled:
                await proxy.stop()
        return web.json_response(proxy.to_json())

    async def _delete_proxy(self, request: web.Request) -> web.Response:
        async with self._lock:
            proxy = self._proxy(request)
            await proxy.stop()
            del self.proxies[proxy.name]
        return web.Response(status=204)

    async def _list_toxics(self, request: web.Request) -> web.Response:
        return web.json_response([t.to_json() for t in self._proxy(request).toxics.values()])

    async def _create_toxic(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        async with self._lock:
            proxy = self._proxy(request)
            toxic = parse_toxic(body)
            proxy.add_toxic(toxic)
        return web.json_response(toxic.to_json())

    async def _get_toxic(self, request: web.Request) -> web.Response:
        toxic = self._proxy(request).toxics.get(request.match_info["toxic"])
        if toxic is None:
            raise apierrors.TOXIC_NOT_FOUND
        return web.json_response(toxic.to_json())

    async def _update_toxic(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        async with self._lock:
            proxy = self._proxy(request)
            toxic = proxy.toxics.get(request.match_info["toxic"])
            if toxic is None:
                raise apierrors.TOXIC_NOT_FOUND
            toxicity = toxic.toxicity
            apply_update(toxic, body)
            proxy.update_toxic(toxic, redraw=toxic.toxicity != toxicity)
        return web.json_response(toxic.to_json())

    async def _delete_toxic(self, request: web.Request) -> web.Response:
        async with self._lock:
            self._proxy(request).remove_toxic(request.match_info["toxic"])
        return web.Response(status=204)


@web.middleware
async def _api_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except apierrors.ApiError as exc:
        if exc.status >= 500:
            logger.warning("%s %s: %s", request.method, request.path, exc.message)
        return web.json_response(exc.to_json(), status=exc.status)


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise apierrors.BAD_REQUEST_BODY.detail(str(exc)) from None


def _string(body: dict[str, object], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise apierrors.BAD_REQUEST_BODY.detail(f"{key} must be a string")
    return value


def _proxy_spec(body: object) -> tuple[str, str, str, bool]:
    """(name, listen, upstream, enabled) of a create/populate item; enabled defaults true."""
    if not isinstance(body, dict):
        raise apierrors.BAD_REQUEST_BODY.detail("expected a JSON object")
    name = _string(body, "name", "")
    upstream = _string(body, "upstream", "")
    listen = _string(body, "listen", "") or "127.0.0.1:0"
    enabled = body.get("enabled", True)
    if not name:
        raise apierrors.MISSING_FIELD.detail("name")
    if not upstream:
        raise apierrors.MISSING_FIELD.detail("upstream")
    if not isinstance(enabled, bool):
        raise apierrors.BAD_REQUEST_BODY.detail("enabled must be true or false")
    Proxy(name, listen, upstream)  # validates both addresses
    return name, listen, upstream, enabled
