"""Keep secrets (routing keys, bearer tokens) out of logs, the store and reports.

Secrets are registered once, where they are read from the environment; every string that
leaves the engine (log records, stored error texts, postmortems) passes through
:func:`redact`. Payloads written to the outbox never hold a secret at all: the channel
adds it at send time.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["LOGGER", "redact", "register_secret"]

LOGGER = logging.getLogger("pytest_resilience.engine")

_MASK = "[REDACTED]"
_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` from now on; short strings are refused to avoid masking common words."""
    if secret and len(secret) >= 6:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


if not any(isinstance(f, _RedactingFilter) for f in LOGGER.filters):
    LOGGER.addFilter(_RedactingFilter())
