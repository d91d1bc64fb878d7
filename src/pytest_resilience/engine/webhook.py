"""Alertmanager-compatible webhook receiver, on its own asyncio loop.

Alertmanager retries a delivery only on 5xx (a 4xx is dropped for good), so: every body an
alert can be understood from is taken (:mod:`.intake` says what that covers: versions 1, 3,
4 and none, Grafana-managed alerting's body, missing statuses and timestamps); only a body
with no alert in it gets 400, naming the field (retrying cannot fix it); a full queue, or a
store that cannot write, gets 503 with Retry-After (retrying will). Identical re-deliveries
(Alertmanager re-sends a group on every ``group_interval``/``repeat_interval``) are
recognised in memory (one hash look-up) and answered 200 without queueing anything.
Binds to loopback unless told otherwise.

A 200 means the alerts are durable: they are in the engine's store (its inbox) before the
answer goes out, so a SIGKILL right after loses none of them. Group commit keeps that cheap
in a storm: the bodies read in one turn of the event loop are written in one transaction,
on this thread, at the start of the next turn (:meth:`~.runner.Engine.take`), and answered
when it commits; bodies arriving meanwhile wait in the socket buffers and make the next
batch. No other thread is woken to write and none to answer (each hand-over between Python
threads can wait a GIL switch interval, 5 ms).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from aiohttp import web

from ..errors import ConfigError
from .alerts import Alert
from .intake import PayloadError, parse_payload, read_delivery
from .redaction import LOGGER, register_secret

__all__ = ["PayloadError", "WebhookServer", "parse_listen", "parse_payload"]


class AlertSink(Protocol):
    def take(self, deliveries: Sequence[Sequence[Alert]]) -> list[bool]:
        """Store each body's alerts durably (one transaction): True per body stored, False
        per body refused (no room); raises if the store cannot write."""
        ...


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"expected HOST:PORT, got {listen!r}", field="listen")
    return host.strip("[]"), int(port)


def _delivery_key(group_key: str, status: str, alerts: list[Alert]) -> str:
    each = sorted(f"{a.fingerprint}|{a.status}|{a.starts_at}|{a.ends_at}" for a in alerts)
    parts = [group_key, status, *each]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


class WebhookServer:
    """Serves ``POST /alerts`` (and ``POST /``) and ``GET /healthz`` on its own thread."""

    def __init__(
        self,
        sink: AlertSink,
        listen: str = "127.0.0.1:9095",
        *,
        token: str | None = None,
        max_body: int = 1 << 20,
        dedup_ttl_s: float = 3600.0,
        dedup_max: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sink = sink
        self.host, self.port = parse_listen(listen)
        self.token = token
        register_secret(token)
        self.max_body = max_body
        self.dedup_ttl_s = dedup_ttl_s
        self.dedup_max = dedup_max
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        # bodies being written, by delivery key: an identical one waits for the same answer
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        # bodies read this turn of the loop, written together at the start of the next
        self._batch: list[tuple[list[Alert], asyncio.Future[bool]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.counters = {"accepted": 0, "duplicates": 0, "rejected": 0, "pushed_back": 0}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_post("/alerts", self._receive)
        app.router.add_post("/", self._receive)
        app.router.add_get("/healthz", self._health)
        return app

    def start(self) -> str:
        """Start serving; returns the base URL (with the real port when 0 was asked)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="engine-webhook", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port}: {failure[0]}", field="listen"
            )
        return self.url

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.counters})

    async def _receive(self, request: web.Request) -> web.Response:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return self._reject(401, "authorization", "missing or wrong bearer token")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "body", f"larger than {self.max_body} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return self._reject(400, "body", f"not valid JSON: {str(exc)[:200]}")
        try:
            delivery = read_delivery(data, now=self._clock())
        except PayloadError as exc:
            return self._reject(400, exc.field, exc.message)
        except RecursionError:
            return self._reject(400, "body", "nested too deeply")
        alerts = list(delivery.alerts)
        if delivery.notes:
            LOGGER.info("webhook body taken with notes: %s", "; ".join(delivery.notes))
        key = _delivery_key(delivery.group_key, delivery.status, alerts)
        now = self._clock()
        self._expire(now)
        if key in self._seen:
            self.counters["duplicates"] += 1
            return web.json_response({"status": "duplicate", "accepted": 0})
        same = self._in_flight.get(key)
        if same is not None:  # an identical body is being written: its outcome is this one's
            refused = await self._written(same)
            if refused:
                return self._busy(refused)
            self.counters["duplicates"] += 1
            return web.json_response({"status": "duplicate", "accepted": 0})
        written = self._take(alerts)
        self._in_flight[key] = written
        try:
            refused = await self._written(written)
        finally:
            del self._in_flight[key]
        if refused:
            return self._busy(refused)
        self._seen[key] = now
        self.counters["accepted"] += len(alerts)
        answer: dict[str, object] = {"status": "ok", "accepted": len(alerts)}
        if delivery.notes:
            answer["ignored"] = list(delivery.notes)
        return web.json_response(answer)

    def _take(self, alerts: list[Alert]) -> asyncio.Future[bool]:
        """Queue a body for the next group commit; the future says how it went."""
        loop = asyncio.get_running_loop()
        written: asyncio.Future[bool] = loop.create_future()
        written.add_done_callback(_retrieved)  # its waiter may have hung up meanwhile
        self._batch.append((alerts, written))
        if len(self._batch) == 1:  # the first body of this turn: write them all next turn
            loop.call_soon(self._write_batch)
        return written

    def _write_batch(self) -> None:
        batch, self._batch = self._batch, []
        try:
            taken = self.sink.take([alerts for alerts, _ in batch])
        except Exception as exc:  # not durable: every body of the batch is answered 503
            for _, written in batch:
                written.set_exception(exc)
            return
        for (_, written), ok in zip(batch, taken, strict=True):
            written.set_result(ok)

    @staticmethod
    async def _written(written: asyncio.Future[bool]) -> str:
        """Wait for a body's transaction: "" once durable, else why it was not taken."""
        try:
            # shielded: a client hanging up must not cancel what other bodies wait for
            taken = await asyncio.shield(written)
        except Exception as exc:  # not durable, so not a 200: Alertmanager retries a 503
            LOGGER.error("webhook alerts not stored: %s", exc)
            return f"the engine's store cannot take alerts: {exc}"
        return "" if taken else "alert queue full"

    def _busy(self, message: str) -> web.Response:
        self.counters["pushed_back"] += 1
        LOGGER.warning("%s: answering 503", message)
        return web.json_response(
            {"status": "busy", "error": f"{message}, retry later"},
            status=503,
            headers={"Retry-After": "5"},
        )

    def _expire(self, now: float) -> None:
        while self._seen and (
            len(self._seen) > self.dedup_max
            or next(iter(self._seen.values())) < now - self.dedup_ttl_s
        ):
            self._seen.popitem(last=False)

    def _reject(self, status: int, field: str, message: str) -> web.Response:
        self.counters["rejected"] += 1
        return web.json_response(
            {"status": "error", "field": field, "error": message}, status=status
        )


def _retrieved(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()  # marks it seen: no "exception was never retrieved" at collection
