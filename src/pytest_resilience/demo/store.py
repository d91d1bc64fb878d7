"""The items table in Postgres, reached through a connection pool and a circuit breaker.

Every call is bounded by a short timeout. A hung database (SIGSTOP, packets dropped) would
otherwise hold each request forever; instead the call fails after the timeout, the breaker counts
it, and once open the store fails fast without touching the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from pytest_resilience.demo.breaker import CircuitBreaker

log = logging.getLogger("pytest_resilience.demo")

T = TypeVar("T")

SEED_ROWS = 1000
# Any constant works, as long as every replica uses the same one.
_SCHEMA_LOCK = 0x5EED_0001

_SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS items (id integer PRIMARY KEY, payload text, checksum text)",
    f"""
    INSERT INTO items (id, payload, checksum)
    SELECT g, p, encode(sha256(convert_to(p, 'UTF8')), 'hex')
    FROM generate_series(1, {SEED_ROWS}) AS g,
         LATERAL (SELECT json_build_object(
             'id', g, 'name', 'item-' || g, 'price_cents', (g * 37) % 10000)::text AS p) AS x
    WHERE NOT EXISTS (SELECT 1 FROM items)
    """,
)

# Errors that mean "the database is not reachable", as opposed to "it answered with an error".
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    PoolClosed,
    OSError,
)


def checksum(payload: str | None) -> str:
    """sha256 hex of the payload's UTF-8 bytes: the same value Postgres' sha256() gives."""
    return hashlib.sha256((payload or "").encode()).hexdigest()


@dataclass(frozen=True)
class Item:
    id: int
    payload: str | None
    checksum: str | None


class DatabaseUnavailable(Exception):
    """The breaker is open, or the call timed out or lost its connection."""


class ItemStore:
    def __init__(
        self,
        dsn: str,
        *,
        pool_max: int,
        timeout_s: float,
        breaker: CircuitBreaker,
        name: str = "demo",
    ) -> None:
        self.dsn = dsn
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.schema_ready = False
        self._name = name
        self._pool_max = pool_max
        self._last_ok: bool | None = None
        self._pool = self._new_pool()
        self._abandoned: set[asyncio.Task[Any]] = set()

    def _new_pool(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self.dsn,
            min_size=self._pool_max,  # all opened up front: no connect on a request's clock
            max_size=self._pool_max,
            open=False,
            name=self._name,
            timeout=self.timeout_s,
            # libpq's minimum; the pool connects in the background, never on a request's clock.
            # No server-side prepare: its extra round trip would land on some request's clock.
            kwargs={"autocommit": True, "connect_timeout": 2, "prepare_threshold": None},
        )

    async def start(self) -> None:
        """Open the pool without waiting: a missing database must not stop the API starting."""
        await self._pool.open(wait=False)

    async def stop(self, *, timeout: float = 0.5) -> None:
        """Close the pool within about ``timeout``: shutdown must fit in the pod's grace.

        Calls left behind are cancelled again (psycopg then closes their connection instead of
        asking a hung server to cancel, up to ten seconds); connections checked out and never
        returned (a leak) are not waited for: psycopg's pool close never waits for them.
        """
        abandoned = list(self._abandoned)
        for task in abandoned:
            task.cancel()
        if abandoned:
            await asyncio.wait(abandoned, timeout=timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._pool.close(timeout=timeout)
        except TimeoutError:
            log.warning(
                "pool %s: not closed within %.1fs; leaving it to the exit", self._name, timeout
            )

    # -- state for /readyz and /metrics ------------------------------------------------------

    @property
    def state(self) -> str:
        if self.breaker.is_open or self._last_ok is False:
            return "down"
        if not self.schema_ready:
            return "starting"
        return "up"

    @property
    def pool_max(self) -> int:
        return self._pool_max

    @property
    def pool_in_use(self) -> int:
        stats = self._pool.get_stats()
        return max(0, stats.get("pool_size", 0) - stats.get("pool_available", 0))

    # -- the bounded call --------------------------------------------------------------------

    async def _bounded(
        self, op: Callable[[psycopg.AsyncConnection], Awaitable[T]], timeout: float
    ) -> T:
        """Run op on a pooled connection, giving up after timeout without waiting for it.

        psycopg reacts to cancellation by asking the server to cancel the query, which on a hung
        server takes up to ten seconds; awaiting that would hang the request after all. So the
        task is cancelled and left to finish on its own.
        """

        async def run() -> T:
            async with self._pool.connection(timeout=timeout) as conn:
                return await op(conn)

        task = asyncio.ensure_future(run())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:  # the request's own deadline (the API draining)
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise TimeoutError(f"database call took longer than {timeout}s")
        return task.result()

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "never retrieved"

    async def _call(self, op: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise DatabaseUnavailable("circuit breaker open")
        try:
            result = await self._bounded(op, self.timeout_s)
        except (TimeoutError, *_UNAVAILABLE) as exc:
            self.breaker.record_failure()
            self._last_ok = False
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except psycopg.Error:
            # The database answered (with an error): it is up.
            self.breaker.record_success()
            self._last_ok = True
            raise
        self.breaker.record_success()
        self._last_ok = True
        return result

    # -- schema ------------------------------------------------------------------------------

    async def ensure_schema(self) -> None:
        """Create and seed the table once, even when replicas start at the same moment."""

        async def op(conn: psycopg.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA_SQL:
                    await conn.execute(statement)

        await self._bounded(op, max(10.0, self.timeout_s))
        self.schema_ready = True

    # -- items -------------------------------------------------------------------------------

    async def get(self, item_id: int) -> Item | None:
        async def op(conn: psycopg.AsyncConnection) -> Item | None:
            cur = await conn.execute(
                "SELECT id, payload, checksum FROM items WHERE id = %s", (item_id,)
            )
            row = await cur.fetchone()
            return Item(*row) if row else None

        return await self._call(op)

    async def put(self, item_id: int, payload: str) -> Item:
        item = Item(item_id, payload, checksum(payload))

        async def op(conn: psycopg.AsyncConnection) -> None:
            await conn.execute(
                "INSERT INTO items (id, payload, checksum) VALUES (%s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET payload = EXCLUDED.payload, "
                "checksum = EXCLUDED.checksum",
                (item.id, item.payload, item.checksum),
            )

        await self._call(op)
        return item

    async def range(self, first: int, last: int) -> list[Item]:
        async def op(conn: psycopg.AsyncConnection) -> list[Item]:
            cur = await conn.execute(
                "SELECT id, payload, checksum FROM items WHERE id BETWEEN %s AND %s ORDER BY id",
                (first, last),
            )
            return [Item(*row) for row in await cur.fetchall()]

        return await self._call(op)

    # -- remediation hooks -------------------------------------------------------------------

    async def reset_pool(self) -> None:
        """Swap in a fresh pool; the old one closes its idle connections now, the rest on return."""
        old, self._pool = self._pool, self._new_pool()
        await self._pool.open(wait=False)
        await old.close(timeout=0.5)

    async def resize_pool(self, max_size: int) -> None:
        self._pool_max = max_size
        await self._pool.resize(min(2, max_size), max_size)
