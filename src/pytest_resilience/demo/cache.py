"""Redis as a read-through cache of item payloads.

The cache is an optimisation, never a dependency: every call has a short socket timeout and
any Redis failure is reported as CacheUnavailable, which callers treat as a miss.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("pytest_resilience.demo")
_T = TypeVar("_T")

KEY_PREFIX = "item:"
TTL_S = 3600


class CacheUnavailable(Exception):
    """Redis did not answer in time, or refused the connection."""


def item_key(item_id: int) -> str:
    return f"{KEY_PREFIX}{item_id}"


class ItemCache:
    def __init__(self, url: str, *, timeout_s: float = 1.0) -> None:  # above a slow network
        self.url = url
        self._last_ok: bool | None = None
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            driver_info=None,  # no CLIENT SETINFO: two round trips per new connection
        )

    @property
    def state(self) -> str:
        return {None: "unknown", True: "up", False: "down"}[self._last_ok]

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self, coro: Awaitable[_T]) -> _T:
        try:
            result = await coro
        except (RedisError, OSError, TimeoutError) as exc:
            self._last_ok = False
            raise CacheUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self._last_ok = True
        return result

    async def get(self, item_id: int) -> str | None:
        value = await self._run(self._redis.get(item_key(item_id)))
        # decode_responses=True: redis answers str, which its types cannot tell from the URL
        return cast(str | None, value)

    async def set(self, item_id: int, payload: str) -> None:
        await self._run(self._redis.set(item_key(item_id), payload, ex=TTL_S))

    async def set_many(self, items: dict[int, str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for item_id, payload in items.items():
            pipe.set(item_key(item_id), payload, ex=TTL_S)
        await self._run(pipe.execute())

    async def invalidate(self, prefix: str = KEY_PREFIX) -> int:
        """Delete every key starting with prefix; returns how many went."""

        async def scan_and_unlink() -> int:
            deleted = 0
            batch: list[str] = []
            pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
            async for key in self._redis.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await self._redis.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self._redis.unlink(*batch)
            return deleted

        return await self._run(scan_and_unlink())
