"""Escalation: pages to PagerDuty (Events API v2) or a generic webhook, via a durable outbox.

A page is first written to the store's outbox, then delivered by one sender thread with
retries: 429 and 5xx (and network errors) back off exponentially, honouring
``Retry-After``; other 4xx are permanent failures. PagerDuty answers 202 on success and
de-duplicates on ``dedup_key`` (the incident id), so a retry after a crash between send
and commit cannot open a second PagerDuty incident.

The routing key is read from the environment and registered for redaction; it is added
to the request at send time and never stored in the outbox.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError
from .redaction import LOGGER, redact, register_secret
from .store import Incident, OutboxItem, Store

__all__ = [
    "PAGERDUTY_SEVERITY",
    "PAGERDUTY_URL",
    "Channel",
    "GenericWebhook",
    "Outbox",
    "PagerDuty",
    "pagerduty_severity",
]

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"

#: The ``severity`` label values rule sets really use, onto PagerDuty's four (the Events API
#: refuses any other value). Written out, not guessed: ``page`` (SRE-book style rules) is a
#: page; ``major``/``minor`` (telco/ITIL, e.g. alertmonitor's) are error/warning; ``none``
#: (kube-prometheus' Watchdog, InfoInhibitor) and ``low`` are info. A missing label is read as
#: warning where the alert is parsed; a value not listed here pages as ``error``, the
#: original kept in ``custom_details.severity_label``.
PAGERDUTY_SEVERITY: dict[str, str] = {
    "critical": "critical",
    "crit": "critical",
    "page": "critical",
    "pager": "critical",
    "emergency": "critical",
    "emerg": "critical",
    "fatal": "critical",
    "disaster": "critical",
    "p1": "critical",
    "sev1": "critical",
    "error": "error",
    "err": "error",
    "major": "error",
    "high": "error",
    "p2": "error",
    "sev2": "error",
    "warning": "warning",
    "warn": "warning",
    "minor": "warning",
    "medium": "warning",
    "average": "warning",
    "p3": "warning",
    "sev3": "warning",
    "": "warning",
    "info": "info",
    "informational": "info",
    "information": "info",
    "notice": "info",
    "low": "info",
    "none": "info",
    "ok": "info",
    "debug": "info",
    "p4": "info",
    "p5": "info",
    "sev4": "info",
    "sev5": "info",
}


def pagerduty_severity(value: str | None) -> str:
    """PagerDuty's severity for a ``severity`` label value (see :data:`PAGERDUTY_SEVERITY`)."""
    return PAGERDUTY_SEVERITY.get((value or "").strip().lower(), "error")


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    retry_after: float | None = None


class Channel(Protocol):
    name: str

    def payload(self, incident: Incident, event_action: str) -> dict[str, Any]:
        """The body to send, without secrets (it is stored in the outbox)."""
        ...

    def send(self, payload: dict[str, Any], *, timeout: float) -> Response: ...


@dataclass
class PagerDuty:
    """PagerDuty Events API v2; the routing key comes from ``routing_key_env``."""

    url: str = PAGERDUTY_URL
    routing_key_env: str = "PAGERDUTY_ROUTING_KEY"
    name: str = "pagerduty"
    _key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self._key = os.environ.get(self.routing_key_env, "")
        if not self._key:
            raise ConfigError(
                f"environment variable {self.routing_key_env} is not set: PagerDuty needs "
                "the integration's routing key",
                field=self.routing_key_env,
            )
        register_secret(self._key)

    def payload(self, incident: Incident, event_action: str) -> dict[str, Any]:
        body: dict[str, Any] = {"event_action": event_action, "dedup_key": incident.id}
        if event_action == "trigger":
            severity = pagerduty_severity(incident.severity)
            body["payload"] = {
                "summary": incident.summary[:1024],
                "source": incident.target or "pytest-resilience",
                "severity": severity,
                "component": incident.target,
                "class": incident.alert_name,
                "custom_details": {
                    "incident": incident.id,
                    "playbook": incident.playbook,
                    "reason": incident.reason,
                    "labels": dict(incident.alert.labels),
                    "severity_label": incident.severity,
                },
            }
            body["client"] = "pytest-resilience"
        return body

    def send(self, payload: dict[str, Any], *, timeout: float) -> Response:
        return _post(self.url, {"routing_key": self._key, **payload}, {}, timeout)


@dataclass
class GenericWebhook:
    """POSTs the incident as JSON; an optional bearer token is read from ``token_env``."""

    url: str
    token_env: str | None = None
    name: str = "webhook"
    _token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.token_env:
            self._token = os.environ.get(self.token_env, "")
            if not self._token:
                raise ConfigError(
                    f"environment variable {self.token_env} is not set", field=self.token_env
                )
            register_secret(self._token)

    def payload(self, incident: Incident, event_action: str) -> dict[str, Any]:
        return {
            "event": event_action,
            "incident": incident.id,
            "alert": incident.alert_name,
            "target": incident.target,
            "severity": incident.severity,
            "status": incident.status,
            "summary": incident.summary,
            "reason": incident.reason,
            "playbook": incident.playbook,
        }

    def send(self, payload: dict[str, Any], *, timeout: float) -> Response:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        return _post(self.url, payload, headers, timeout)


def _post(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> Response:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, response.read(2048).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        try:
            delay = float(retry_after) if retry_after else None
        except ValueError:
            delay = None
        return Response(exc.code, exc.read(2048).decode(errors="replace"), delay)
    except OSError as exc:  # refused, reset, timeout: worth retrying
        return Response(0, str(exc))


class Outbox:
    """Durable delivery of escalations: store first, then one sender thread with retries."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        *,
        backoff_s: float = 0.5,
        max_backoff_s: float = 60.0,
        max_attempts: int = 15,
        timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.channels = {c.name: c for c in channels}
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, incident: Incident, event_action: str) -> int:
        """Queue ``event_action`` (trigger/resolve) on every channel; returns how many were new."""
        queued = 0
        for channel in self.channels.values():
            if event_action == "resolve" and not self._triggered(channel.name, incident.id):
                continue
            body = channel.payload(incident, event_action)
            queued += self.store.enqueue(channel.name, incident.id, event_action, body)
        self._kick.set()
        return queued

    def _triggered(self, channel: str, dedup_key: str) -> bool:
        # the outbox's unique index, not a scan of it: a storm of resolves stays linear
        return self.store.queued(channel, dedup_key, "trigger")

    def start(self) -> None:
        if self.channels and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="engine-outbox", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # the sender must outlive one bad row
                LOGGER.exception("outbox pass failed")
            due = self.store.next_outbox_due()
            wait = 1.0 if due is None else min(1.0, max(0.0, due - time.time()))
            self._kick.wait(wait)
            self._kick.clear()

    def deliver_due(self) -> int:
        delivered = 0
        for item in self.store.outbox(status="pending", due_before=time.time()):
            if self._stop.is_set():
                break
            delivered += self._deliver(item)
        return delivered

    def _deliver(self, item: OutboxItem) -> bool:
        channel = self.channels.get(item.channel)
        if channel is None:
            return False  # written by an engine with another configuration; kept for it
        # A trigger and its resolve go out in order: never resolve before the page landed.
        if item.event_action == "resolve" and any(
            i.dedup_key == item.dedup_key
            and i.channel == item.channel
            and i.event_action == "trigger"
            for i in self.store.outbox(status="pending")
        ):
            return False
        response = channel.send(item.payload, timeout=self.timeout_s)
        if 200 <= response.status < 300:
            self.store.outbox_result(item.id, status="delivered")
            LOGGER.info(
                "%s %s delivered for %s (attempt %d)",
                item.channel,
                item.event_action,
                item.dedup_key,
                item.attempts + 1,
            )
            return True
        error = redact(f"HTTP {response.status}: {response.body[:300]}")
        retryable = response.status in (0, 429) or response.status >= 500
        if not retryable or item.attempts + 1 >= self.max_attempts:
            self.store.outbox_result(item.id, status="failed", error=error)
            LOGGER.error(
                "%s %s for %s failed for good: %s",
                item.channel,
                item.event_action,
                item.dedup_key,
                error,
            )
            return False
        delay = min(self.max_backoff_s, self.backoff_s * 2**item.attempts)
        delay = max(delay * random.uniform(0.8, 1.2), response.retry_after or 0.0)
        self.store.outbox_result(
            item.id, status="pending", error=error, next_attempt_at=time.time() + delay
        )
        LOGGER.warning(
            "%s %s for %s: %s; retry in %.1fs",
            item.channel,
            item.event_action,
            item.dedup_key,
            error,
            delay,
        )
        return False
