"""The demo HTTP API: items read through Redis from Postgres, meant to run as several replicas.

Run with ``python -m pytest_resilience.demo.api``; configured from the environment (see
ApiSettings). Replicas bind the shared service port with SO_REUSEPORT so killing one leaves the
service up; each may also serve the same app on a private pod port for health checks and
scraping. Version v2 is deliberately faulty (one item request in ten answers 500) so rollback
scenarios have something to roll back from.

The service degrades rather than dies: it starts with the database or Redis down, serves cached
items while the database circuit breaker is open, and fails cache misses fast with 503.

Size: over 500 lines because the demo is one runnable example service (settings, degrading
Postgres and Redis access, admin hooks, the faulty v2) a user reads in one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web
from aiohttp.typedefs import Handler

from pytest_resilience.demo.breaker import CircuitBreaker
from pytest_resilience.demo.cache import KEY_PREFIX, CacheUnavailable, ItemCache
from pytest_resilience.demo.metrics import (
    CONTENT_TYPE_LATEST,
    DemoMetrics,
    disk_used_ratio,
    memory_usage_file,
)
from pytest_resilience.demo.store import DatabaseUnavailable, ItemStore, checksum
from pytest_resilience.errors import ConfigError

log = logging.getLogger("pytest_resilience.demo")

HOT_IDS = range(1, 101)
FAULTY_VERSIONS = frozenset({"v2"})
# v2 fails every tenth item request (reads and writes: all of the demo's load), deterministic
# so tests need no luck: 10%, twice the 5% the bundled ErrorRateHighCritical rule fires above.
# At one in twenty it was exactly 5%, on the bound: the alert fired only on the noise of the
# rollout, late (15 s) and not always.
FAULT_PERIOD = 10
_MIB = 1024 * 1024
# Probes and scrapes are not user traffic: counting them would dilute the error rate SLO.
_PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# Bound on each closing step at shutdown (leaked connections, the cache client).
_CLOSE_S = 0.5


@dataclass(frozen=True)
class ApiSettings:
    port: int | None
    pod_port: int | None
    pod_name: str
    version: str
    pg_dsn: str
    redis_url: str
    pool_max: int = 10
    memory_limit_mb: int | None = None
    #: demo_disk_used_ratio is the used share of the filesystem holding this path
    disk_path: Path | None = None
    db_timeout_s: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 2.0
    #: where both ports listen: loopback for local runs; a pod sets 0.0.0.0 (image and
    #: manifest) because the kubelet's probes, Services and Prometheus use the pod IP
    bind_address: str = "127.0.0.1"
    #: after SIGTERM, how long requests in flight get to finish (then they are answered 503):
    #: well inside the grace before SIGKILL (3 s locally, 30 s in a pod), past normal latency
    drain_s: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiSettings:
        env = os.environ if environ is None else environ
        port = _opt_int(env, "PORT")
        pod_port = _opt_int(env, "POD_PORT")
        if port is None and pod_port is None:
            raise ConfigError("set PORT (shared service port) or POD_PORT", source="environment")
        return cls(
            port=port,
            pod_port=pod_port,
            pod_name=env.get("POD_NAME") or f"api-{os.getpid()}",
            version=env.get("DEMO_VERSION") or env.get("VERSION") or "v1",
            pg_dsn=env.get("DEMO_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
            redis_url=env.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0"),
            pool_max=_opt_int(env, "DEMO_POOL_MAX", minimum=1) or 10,
            # MEMORY_LIMIT_MB comes from the local target (memory_limit_mb in services.yaml).
            memory_limit_mb=_opt_int(env, "MEMORY_LIMIT_MB", minimum=1)
            or _opt_int(env, "DEMO_MEMORY_LIMIT_MB", minimum=1),
            disk_path=_opt_path(env, "DEMO_DISK_PATH") or _opt_path(env, "DATA_DIR"),
            db_timeout_s=_opt_float(env, "DEMO_DB_TIMEOUT_S") or 1.0,
            breaker_failures=_opt_int(env, "DEMO_BREAKER_FAILURES", minimum=1) or 5,
            breaker_cooldown_s=_opt_float(env, "DEMO_BREAKER_COOLDOWN_S") or 2.0,
            bind_address=_opt_ip(env, "DEMO_BIND_ADDRESS") or "127.0.0.1",
            drain_s=_opt_float(env, "DEMO_DRAIN_S") or 1.0,
        )


def _opt_int(env: Mapping[str, str], name: str, *, minimum: int = 0) -> int | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"must be an integer >= {minimum}, got {raw!r}", field=name)
    return value


def _opt_ip(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ConfigError(
            f"must be an IP address to listen on (127.0.0.1, 0.0.0.0, ::), got {raw!r}",
            field=name,
        ) from None


def _opt_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def _opt_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"must be a number > 0, got {raw!r}", field=name)
    return value


def _json(code: int, /, **body: object) -> web.Response:
    return web.json_response(body, status=code)


def _query_int(request: web.Request, name: str, *, minimum: int, maximum: int) -> int:
    raw = request.query.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"?{name}= must be an integer in {minimum}..{maximum}"}),
            content_type="application/json",
        )
    return value


class DemoService:
    """Handlers plus the state they share: the store, the cache, metrics and the ballast."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.metrics = DemoMetrics(version=settings.version)
        self.breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures, cooldown_s=settings.breaker_cooldown_s
        )
        self.store = ItemStore(
            settings.pg_dsn,
            pool_max=settings.pool_max,
            timeout_s=settings.db_timeout_s,
            breaker=self.breaker,
            name=settings.pod_name,
        )
        self.cache = ItemCache(settings.redis_url)
        self.faulty = settings.version in FAULTY_VERSIONS
        self._item_requests = 0
        self._ballast: list[bytearray] = []
        self._leaked: list[tuple[Any, Any]] = []  # (pool, connection) checked out, not returned
        self._process = psutil.Process()
        self._memory_file = memory_usage_file()
        self._prepare_task: asyncio.Task[None] | None = None
        # Each request's deadline, None until SIGTERM; drain() brings them all forward.
        self._deadlines: set[asyncio.Timeout] = set()
        self._drain_at: float | None = None
        # Without a configured limit the process may grow to the machine's memory, as a
        # container without limits may; never 0, which would make usage/limit infinite.
        limit = settings.memory_limit_mb
        self.metrics.memory_limit.set(limit * _MIB if limit else psutil.virtual_memory().total)

    # -- lifecycle ---------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._observe])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/items/{id}", self.get_item)
        app.router.add_post("/items", self.post_item)
        app.router.add_get("/items/{id}/verify", self.verify_item)
        app.router.add_post("/admin/gc", self.admin_gc)
        app.router.add_post("/admin/pool/reset", self.admin_pool_reset)
        app.router.add_post("/admin/pool/resize", self.admin_pool_resize)
        app.router.add_post("/admin/cache/invalidate", self.admin_cache_invalidate)
        app.router.add_post("/admin/cache/warm", self.admin_cache_warm)
        app.router.add_post("/admin/memory/hog", self.admin_memory_hog)
        app.router.add_post("/admin/memory/release", self.admin_memory_release)
        app.router.add_post("/admin/pool/leak", self.admin_pool_leak)
        app.router.add_post("/admin/pool/unleak", self.admin_pool_unleak)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await self.store.start()
        self._prepare_task = asyncio.create_task(self._prepare())

    def drain(self) -> None:
        """SIGTERM: every request in flight (and any still to come) must end within drain_s.

        One that cannot (waiting on a dry pool or a hung database) is answered 503 then,
        rather than holding the process until the SIGKILL, as aiohttp's own 60 s would.
        """
        if self._drain_at is not None:
            return
        self._drain_at = asyncio.get_running_loop().time() + self.settings.drain_s
        for deadline in self._deadlines:
            deadline.reschedule(self._drain_at)

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._prepare_task is not None:
            self._prepare_task.cancel()
        await self._close_leaked()
        await self.store.stop()
        with contextlib.suppress(Exception):  # bounded; a cache already gone is fine here
            async with asyncio.timeout(_CLOSE_S):
                await self.cache.close()

    async def _close_leaked(self) -> None:
        """Close what the leak fault holds: no pool ever gets it back, so nothing else will."""
        leaked, self._leaked = self._leaked, []
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_S):
                for _, conn in leaked:
                    await conn.close()

    async def _prepare(self) -> None:
        """Schema, then a warm cache, each retried with back-off until the dependency is up."""
        await _retry("create schema", self.store.ensure_schema)
        await _retry("warm cache", self.warm_cache)

    async def warm_cache(self) -> int:
        items = await self.store.range(HOT_IDS.start, HOT_IDS.stop - 1)
        await self.cache.set_many({item.id: item.payload or "" for item in items})
        return len(items)

    # -- middleware --------------------------------------------------------------------------

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._drain_at) as deadline:
                self._deadlines.add(deadline)
                try:
                    response = await handler(request)
                finally:
                    self._deadlines.discard(deadline)
        except web.HTTPException as exc:
            response = exc
        except TimeoutError:
            if not deadline.expired():
                raise
            response = _json(503, error=f"shutting down: not done within {self.settings.drain_s}s")
            response.force_close()
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = _json(500, error="internal error")
        if route not in _PROBE_ROUTES:
            self.metrics.observe(route, response.status, time.perf_counter() - started)
        response.headers["X-Pod"] = self.settings.pod_name
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # -- probes and metrics ------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return _json(200, status="alive", pod=self.settings.pod_name)

    async def readyz(self, request: web.Request) -> web.Response:
        # Not ready until the database has answered once (a new replica has nothing to
        # serve before that); from then on ready whatever happens to it: a lost database
        # degrades the service, it must not pull every replica out of rotation.
        ready = self.store.schema_ready
        return _json(
            200 if ready else 503,
            status="ready" if ready else "waiting for the database",
            pod=self.settings.pod_name,
            version=self.settings.version,
            db=self.store.state,
            cache=self.cache.state,
            breaker=self.breaker.state.value,
        )

    async def metrics_page(self, request: web.Request) -> web.Response:
        m = self.metrics
        m.pool_in_use.set(self.store.pool_in_use)
        m.pool_max.set(self.store.pool_max)
        rss = self._process.memory_info().rss
        m.resident_memory.set(rss)
        m.memory_usage.set(self._cgroup_memory() or rss)
        m.breaker_open.set(1 if self.breaker.is_open else 0)
        if self.settings.disk_path is not None:
            with contextlib.suppress(OSError):  # the volume may be gone for a moment
                m.disk_used.set(disk_used_ratio(self.settings.disk_path))
        return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- items -------------------------------------------------------------------------------

    def _injected_failure(self) -> bool:
        self._item_requests += 1
        return self.faulty and self._item_requests % FAULT_PERIOD == 0

    async def get_item(self, request: web.Request) -> web.Response:
        item_id = _path_id(request)
        if self._injected_failure():
            return _json(500, error=f"injected fault of version {self.settings.version}")
        try:
            cached = await self.cache.get(item_id)
        except CacheUnavailable:
            cached = None
        if cached is not None:
            self.metrics.cache_hits.inc()
            response = _json(200, id=item_id, payload=cached, source="cache")
            response.headers["X-Cache"] = "hit"
            return response
        self.metrics.cache_misses.inc()
        if not self.store.schema_ready:
            return _json(503, error="database not ready yet")
        try:
            item = await self.store.get(item_id)
        except DatabaseUnavailable as exc:
            return _json(503, error="database unavailable", detail=str(exc))
        if item is None:
            return _json(404, error=f"no item {item_id}")
        with contextlib.suppress(CacheUnavailable):
            await self.cache.set(item_id, item.payload or "")
        response = _json(200, id=item_id, payload=item.payload, source="db")
        response.headers["X-Cache"] = "miss"
        return response

    async def post_item(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _json(400, error='body must be JSON: {"id": <int>, "payload": <any JSON>}')
        item_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(item_id, int) or isinstance(item_id, bool) or item_id < 1:
            return _json(400, error=f"field 'id' must be a positive integer, got {item_id!r}")
        if "payload" not in body:
            return _json(400, error="field 'payload' is required")
        if self._injected_failure():
            return _json(500, error=f"injected fault of version {self.settings.version}")
        if not self.store.schema_ready:
            return _json(503, error="database not ready yet")
        payload = json.dumps(body["payload"], sort_keys=True, separators=(",", ":"))
        try:
            item = await self.store.put(item_id, payload)
        except DatabaseUnavailable as exc:
            return _json(503, error="database unavailable", detail=str(exc))
        with contextlib.suppress(CacheUnavailable):
            await self.cache.set(item_id, payload)
        return _json(201, id=item.id, checksum=item.checksum)

    async def verify_item(self, request: web.Request) -> web.Response:
        """Recompute the checksum from the database (and compare the cached copy): 409 if off."""
        item_id = _path_id(request)
        if not self.store.schema_ready:
            return _json(503, error="database not ready yet")
        try:
            item = await self.store.get(item_id)
        except DatabaseUnavailable as exc:
            return _json(503, error="database unavailable", detail=str(exc))
        if item is None:
            return _json(404, error=f"no item {item_id}")
        actual = checksum(item.payload)
        try:
            cached = await self.cache.get(item_id)
        except CacheUnavailable:
            cached = None
        cache_ok = cached is None or cached == (item.payload or "")
        ok = actual == item.checksum and cache_ok
        return _json(
            200 if ok else 409,
            id=item_id,
            ok=ok,
            stored_checksum=item.checksum,
            actual_checksum=actual,
            cache_ok=cache_ok,
        )

    # -- admin hooks for remediation ---------------------------------------------------------

    async def admin_gc(self, request: web.Request) -> web.Response:
        before = self._process.memory_info().rss
        collected = gc.collect()
        return _json(
            200, collected=collected, rss_before=before, rss_after=self._process.memory_info().rss
        )

    async def admin_pool_reset(self, request: web.Request) -> web.Response:
        await self.store.reset_pool()
        # "max" is what the engine's close_idle_connections reads; pool_max kept for callers.
        return _json(200, max=self.store.pool_max, pool_max=self.store.pool_max)

    async def admin_pool_resize(self, request: web.Request) -> web.Response:
        size = _query_int(request, "max", minimum=1, maximum=1000)
        await self.store.resize_pool(size)
        return _json(200, pool_max=self.store.pool_max)

    async def admin_cache_invalidate(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix") or KEY_PREFIX
        try:
            deleted = await self.cache.invalidate(prefix)
        except CacheUnavailable as exc:
            return _json(503, error="cache unavailable", detail=str(exc))
        return _json(200, deleted=deleted, prefix=prefix)

    async def admin_cache_warm(self, request: web.Request) -> web.Response:
        if not self.store.schema_ready:
            return _json(503, error="database not ready yet")
        try:
            warmed = await self.warm_cache()
        except DatabaseUnavailable as exc:
            return _json(503, error="database unavailable", detail=str(exc))
        except CacheUnavailable as exc:
            return _json(503, error="cache unavailable", detail=str(exc))
        return _json(200, warmed=warmed)

    async def admin_memory_hog(self, request: web.Request) -> web.Response:
        mb = _query_int(request, "mb", minimum=1, maximum=64 * 1024)
        # Repetition writes every byte, so the pages are really resident (a zeroed bytearray
        # can stay virtual).
        self._ballast.append(bytearray(b"\x5a") * (mb * _MIB))
        return _json(200, held_mb=self._held_mb(), rss=self._process.memory_info().rss)

    async def admin_memory_release(self, request: web.Request) -> web.Response:
        released = self._held_mb()
        self._ballast.clear()
        gc.collect()
        return _json(200, released_mb=released, rss=self._process.memory_info().rss)

    async def admin_pool_leak(self, request: web.Request) -> web.Response:
        """Fault hook: check ``n`` connections out of the pool and never return them.

        What a code path that forgets to close its connection does: the pool runs dry, and
        requests that need the database wait for a connection until they time out. Resetting
        the pool (``/admin/pool/reset``) abandons the leaked ones with the old pool.
        """
        n = _query_int(request, "n", minimum=1, maximum=1000)
        pool = self.store._pool  # the live pool; ItemStore has no public checkout on purpose
        leaked = 0
        for _ in range(n):
            try:
                conn = await pool.getconn(timeout=min(0.5, self.settings.db_timeout_s))
            except Exception:  # pool dry or database down: leak what we got
                break
            self._leaked.append((pool, conn))
            leaked += 1
        return _json(200, leaked=leaked, held=len(self._leaked), pool_max=self.store.pool_max)

    async def admin_pool_unleak(self, request: web.Request) -> web.Response:
        """Return leaked connections (to their pool, which closes them if it was replaced)."""
        returned = 0
        while self._leaked:
            pool, conn = self._leaked.pop()
            with contextlib.suppress(Exception):
                await pool.putconn(conn)
                returned += 1
        return _json(200, returned=returned)

    def _cgroup_memory(self) -> int | None:
        if self._memory_file is None:
            return None
        try:
            return int(self._memory_file.read_text())
        except (OSError, ValueError):
            return None

    def _held_mb(self) -> int:
        return sum(len(chunk) for chunk in self._ballast) // _MIB


def _path_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"item id must be an integer, got {raw!r}"}),
            content_type="application/json",
        ) from None


async def _retry(what: str, step: Callable[[], Awaitable[object]]) -> None:
    delay = 0.2
    while True:
        try:
            await step()
            log.info("%s: done", what)
            return
        except Exception as exc:  # any failure: the dependency is not there yet
            log.warning(
                "%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay
            )
        await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
        delay = min(delay * 2, 5.0)


async def serve(settings: ApiSettings, *, stop: asyncio.Event) -> None:
    """Serve until stop is set; binds the shared port with reuse_port and the pod port.

    Then a bounded drain: the ports close, idle keep-alive connections close, requests in
    flight get ``drain_s`` to finish (DemoService.drain), and the pool and cache close.
    """
    service = DemoService(settings)
    # aiohttp's own wait for handlers (60 s by default) is only a backstop behind drain().
    runner = web.AppRunner(
        service.build_app(), access_log=None, shutdown_timeout=settings.drain_s + _CLOSE_S
    )
    await runner.setup()
    host = settings.bind_address
    try:
        if settings.port is not None:
            await web.TCPSite(runner, host, settings.port, reuse_port=True).start()
        if settings.pod_port is not None:
            await web.TCPSite(runner, host, settings.pod_port).start()
        log.info(
            "%s (%s) serving on %s port=%s pod_port=%s",
            settings.pod_name,
            settings.version,
            host,
            settings.port,
            settings.pod_port,
        )
        await stop.wait()
    finally:
        service.drain()
        await runner.cleanup()


async def _main() -> None:
    settings = ApiSettings.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)
    # Drained and closed, nothing left to do: the interpreter's teardown (finalising every
    # module and object) took 0.5-1.4 s of the 3 s grace on a contended CPU, measured, and
    # asyncio.run would first await any task still running. Flush the logs and leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_main())
    except ConfigError as exc:
        raise SystemExit(f"pytest_resilience.demo.api: {exc}") from None


if __name__ == "__main__":
    main()
