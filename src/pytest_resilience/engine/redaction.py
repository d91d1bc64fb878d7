"""Keep secrets (routing keys, bearer tokens) out of logs, the store and reports.

One registry for the whole package (:mod:`pytest_resilience.redaction`), so a key the
engine reads is masked in the reports too. Secrets are registered once, where they are
read from the environment; every string that
leaves the engine (log records, stored error texts, postmortems) passes through
:func:`redact`. Payloads written to the outbox never hold a secret at all: the channel
adds it at send time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .. import redaction as _shared

__all__ = ["LOGGER", "redact", "register_secret", "text_redactor"]

LOGGER = logging.getLogger("pytest_resilience.engine")


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` everywhere from now on: engine logs and store, and every report."""
    _shared.register_secret(secret)


def redact(text: str) -> str:
    return _shared.redact_text(text)


def text_redactor() -> Callable[[str], str]:
    """:func:`redact` for many strings in a row (one look at the secrets for a whole batch)."""
    return _shared.text_redactor()


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


if not any(isinstance(f, _RedactingFilter) for f in LOGGER.filters):
    LOGGER.addFilter(_RedactingFilter())
