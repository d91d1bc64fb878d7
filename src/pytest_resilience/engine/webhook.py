"""Alertmanager-compatible webhook receiver (payload version 4), on its own asyncio loop.

Alertmanager retries a delivery only on 5xx (a 4xx is dropped for good), so: malformed
payloads get 400 with a message naming the field (retrying cannot fix them), and a full
queue gets 503 with Retry-After (retrying will). Identical re-deliveries (Alertmanager
re-sends a group on every ``group_interval``/``repeat_interval``) are recognised and
answered 200 without queueing anything. Binds to loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from aiohttp import web

from ..errors import ConfigError
from .alerts import FIRING, RESOLVED, Alert
from .redaction import LOGGER, register_secret

__all__ = ["PayloadError", "WebhookServer", "parse_listen", "parse_payload"]

_ZERO_TIME = "0001-01-01T00:00:00Z"


class AlertSink(Protocol):
    def submit(self, alert: Alert) -> bool: ...


class PayloadError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"expected HOST:PORT, got {listen!r}", field="listen")
    return host.strip("[]"), int(port)


def parse_payload(data: Any, *, now: float | None = None) -> tuple[str, list[Alert]]:
    """Validate a version-4 webhook payload; returns (groupKey, alerts)."""
    now = time.time() if now is None else now
    if not isinstance(data, dict):
        raise PayloadError("body", f"expected a JSON object, got {type(data).__name__}")
    if data.get("version") != "4":
        raise PayloadError("version", f'expected "4", got {data.get("version")!r}')
    group_key = data.get("groupKey")
    if not isinstance(group_key, str):
        raise PayloadError("groupKey", "expected a string")
    _status(data.get("status"), "status")
    items = data.get("alerts")
    if not isinstance(items, list):
        raise PayloadError("alerts", f"expected a list, got {type(items).__name__}")
    return group_key, [_alert(item, f"alerts[{i}]", now) for i, item in enumerate(items)]


def _status(value: Any, field: str) -> str:
    if value not in (FIRING, RESOLVED):
        raise PayloadError(field, f"expected 'firing' or 'resolved', got {value!r}")
    return value


def _strings(value: Any, field: str, *, required: bool) -> dict[str, str]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(field, f"expected an object, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{field}.{key}", f"expected a string, got {type(item).__name__}")
    return value


def _time(value: Any, field: str, *, required: bool) -> float | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise PayloadError(field, "expected an RFC 3339 timestamp string")
    if value == _ZERO_TIME:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(field, f"not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise PayloadError(field, f"timestamp without a time zone: {value[:40]!r}")
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        raise PayloadError(field, f"timestamp out of range: {value[:40]!r}") from None


def _alert(item: Any, where: str, now: float) -> Alert:
    if not isinstance(item, dict):
        raise PayloadError(where, f"expected an object, got {type(item).__name__}")
    status = _status(item.get("status"), f"{where}.status")
    labels = _strings(item.get("labels"), f"{where}.labels", required=True)
    name = labels.get("alertname")
    if not name:
        raise PayloadError(f"{where}.labels.alertname", "missing")
    annotations = _strings(item.get("annotations"), f"{where}.annotations", required=False)
    starts = _time(item.get("startsAt"), f"{where}.startsAt", required=True)
    ends = _time(item.get("endsAt"), f"{where}.endsAt", required=False)
    fingerprint = item.get("fingerprint", "")
    if not isinstance(fingerprint, str):
        raise PayloadError(f"{where}.fingerprint", "expected a string")
    try:
        value = float(annotations["value"]) if "value" in annotations else None
    except ValueError:
        value = None
    return Alert(
        name=name,
        target=Alert.target_from_labels(labels) or labels.get("instance", "") or "unknown",
        labels=dict(labels),
        annotations=dict(annotations),
        severity=labels.get("severity", "warning"),
        status=status,
        starts_at=starts if starts is not None else now,
        ends_at=ends if status == RESOLVED else None,
        fingerprint=fingerprint,
        value=value,
        source="webhook",
        received_at=now,
    )


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
            group_key, alerts = parse_payload(data, now=self._clock())
        except PayloadError as exc:
            return self._reject(400, exc.field, str(exc).split(": ", 1)[1])
        except RecursionError:
            return self._reject(400, "body", "nested too deeply")
        key = _delivery_key(group_key, data["status"], alerts)
        now = self._clock()
        self._expire(now)
        if key in self._seen:
            self.counters["duplicates"] += 1
            return web.json_response({"status": "duplicate", "accepted": 0})
        for accepted, alert in enumerate(alerts):
            if not self.sink.submit(alert):
                self.counters["accepted"] += accepted
                self.counters["pushed_back"] += 1
                LOGGER.warning("alert queue full: answering 503 after %d alerts", accepted)
                return web.json_response(
                    {"status": "busy", "error": "alert queue full, retry later"},
                    status=503,
                    headers={"Retry-After": "5"},
                )
        self._seen[key] = now
        self.counters["accepted"] += len(alerts)
        return web.json_response({"status": "ok", "accepted": len(alerts)})

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
