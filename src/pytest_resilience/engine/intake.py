"""Reading webhook bodies: every Alertmanager-compatible shape an alert can be understood from.

Alertmanager never re-sends a delivery answered 4xx, so a body refused is an alert lost for
good. The rule is therefore liberal: an alert is anything with ``labels.alertname`` and a
status (its own, else its group's). What real senders add, omit or vary is read, not refused:

- no ``version`` (forwarders, hand-written tests), ``"3"`` (Alertmanager < 0.7, numeric
  ``groupKey``), ``"4"`` (Alertmanager), ``"1"`` (Grafana-managed alerting, which adds
  ``orgId``, ``state``, ``title``, ``message`` and per-alert ``values``);
- a missing or zero-time (``0001-01-01T00:00:00Z``) ``startsAt``/``endsAt``: the time the
  body arrived stands in; an unreadable timestamp likewise, with a note in the answer;
- label values that are numbers or booleans (read as text), capitalised severities;
- unknown keys anywhere (``notification_reason``, ``routeLabels``, ``truncatedAlerts``,
  ``silenceURL`` ...).

One alert that cannot be understood does not cost the others: it is skipped with a note
naming its field. Only a body with no understandable alert in it is refused
(:class:`PayloadError`, answered 400 naming the field).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .alerts import FIRING, RESOLVED, Alert

__all__ = ["Delivery", "PayloadError", "parse_payload", "read_delivery"]

_ZERO_YEAR = 1  # Go's zero time.Time marshals as 0001-01-01T00:00:00Z: "not set"
_STATUSES = {FIRING: FIRING, RESOLVED: RESOLVED}
# Grafana's legacy top-level ``state`` (kept in its unified webhook body "for compatibility")
_GRAFANA_STATES = {"alerting": FIRING, "ok": RESOLVED}
_MAX_NOTES = 20


class PayloadError(ValueError):
    """The body holds no alert that can be understood; ``field`` names what is missing."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Delivery:
    """One webhook body as read: its group, the alerts taken, and what was ignored."""

    group_key: str
    status: str  # the group's status, "" if it gave none
    alerts: tuple[Alert, ...]
    notes: tuple[str, ...] = field(default=())


def parse_payload(data: Any, *, now: float | None = None) -> tuple[str, list[Alert]]:
    """``(groupKey, alerts)`` of a webhook body; see :func:`read_delivery`."""
    delivery = read_delivery(data, now=now)
    return delivery.group_key, list(delivery.alerts)


def read_delivery(data: Any, *, now: float | None = None) -> Delivery:
    """Read a parsed JSON body; raises :class:`PayloadError` only if no alert is in it."""
    now = time.time() if now is None else now
    if not isinstance(data, dict):
        raise PayloadError("body", f"expected a JSON object, got {type(data).__name__}")
    notes: list[str] = []
    group_status = _status_of(data.get("status"))
    if group_status is None:
        group_status = _GRAFANA_STATES.get(str(data.get("state", "")).lower(), "")
    items = data.get("alerts")
    if items is None:
        raise PayloadError("alerts", "missing: the body has no alert in it")
    if not isinstance(items, list):
        raise PayloadError("alerts", f"expected a list of alerts, got {type(items).__name__}")
    if not items:
        raise PayloadError("alerts", "empty: the body has no alert in it")
    alerts: list[Alert] = []
    first_skip: PayloadError | None = None
    for index, item in enumerate(items):
        try:
            alerts.append(_alert(item, f"alerts[{index}]", group_status, now, notes))
        except PayloadError as skipped:
            first_skip = first_skip or skipped
            notes.append(f"skipped {skipped}")
    if not alerts:
        assert first_skip is not None
        raise first_skip
    return Delivery(
        group_key=_group_key(data.get("groupKey")),
        status=group_status,
        alerts=tuple(alerts),
        notes=tuple(notes[:_MAX_NOTES]),
    )


def _group_key(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)  # v3's uint64, or whatever a forwarder put there


def _status_of(value: Any) -> str | None:
    return _STATUSES.get(value.strip().lower()) if isinstance(value, str) else None


def _text(value: Any) -> str | None:
    """A label value as text: strings as they are, numbers and booleans spelled out."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def _labels(value: Any, where: str, notes: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        kind = "missing" if value is None else f"expected an object, got {type(value).__name__}"
        raise PayloadError(where, kind)
    labels: dict[str, str] = {}
    for key, item in value.items():
        text = _text(item)
        if text is None:
            if item is not None:
                notes.append(f"{where}.{key}: ignored a {type(item).__name__} label value")
            continue
        labels[str(key)] = text
    return labels


def _annotations(value: Any, where: str, notes: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        notes.append(f"{where}: ignored, expected an object, got {type(value).__name__}")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:
            continue
        text = _text(item)
        out[str(key)] = text if text is not None else json.dumps(item, sort_keys=True)[:4096]
    return out


def _time(value: Any, where: str, notes: list[str]) -> float | None:
    """Seconds since the epoch, or None for absent/zero; unreadable is a note, not a refusal."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        notes.append(f"{where}: ignored, expected an RFC 3339 timestamp string")
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        notes.append(f"{where}: ignored, not an RFC 3339 timestamp: {value[:40]!r}")
        return None
    if parsed.year == _ZERO_YEAR:
        return None
    if parsed.tzinfo is None:
        notes.append(f"{where}: no time zone in {value[:40]!r}, read as UTC")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        notes.append(f"{where}: ignored, out of range: {value[:40]!r}")
        return None


def _alert(item: Any, where: str, group_status: str, now: float, notes: list[str]) -> Alert:
    if not isinstance(item, dict):
        raise PayloadError(where, f"expected an object, got {type(item).__name__}")
    labels = _labels(item.get("labels"), f"{where}.labels", notes)
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(f"{where}.labels.alertname", "missing: an alert needs a name")
    status = _status_of(item.get("status"))
    if status is None:
        if not group_status:
            raise PayloadError(
                f"{where}.status",
                f"expected 'firing' or 'resolved' here or in the group's status, got "
                f"{item.get('status')!r}",
            )
        if "status" in item:
            notes.append(f"{where}.status: {item['status']!r} unknown, the group's applies")
        status = group_status
    annotations = _annotations(item.get("annotations"), f"{where}.annotations", notes)
    starts = _time(item.get("startsAt"), f"{where}.startsAt", notes)
    ends = _time(item.get("endsAt"), f"{where}.endsAt", notes)
    fingerprint = _text(item.get("fingerprint")) or ""
    try:
        value = float(annotations["value"]) if "value" in annotations else None
    except ValueError:
        value = None
    return Alert(
        name=name,
        target=Alert.target_from_labels(labels) or labels.get("instance", "") or "unknown",
        labels=labels,
        annotations=annotations,
        severity=labels.get("severity", "").strip().lower() or "warning",
        status=status,
        starts_at=starts if starts is not None else now,
        ends_at=(ends if ends is not None else now) if status == RESOLVED else None,
        fingerprint=fingerprint,
        value=value,
        source="webhook",
        received_at=now,
    )
