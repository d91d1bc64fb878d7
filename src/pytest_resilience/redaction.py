"""Keep secrets out of every report: pytest-html extras, the standalone HTML, its JSON twin,
JUnit properties and the console.

Reports are shared far more widely than CI logs (attached to reviews, archived, mailed), so
everything a renderer prints goes through :func:`redact` first, and the finished documents
through :func:`redact_text` once more. Four rules, each cheap enough to run over 500
scenarios' timelines:

- values under a secret-looking name (``routing_key``, ``api_key``, ``*token*``,
  ``*secret*``, ``*password*``, ``authorization``, env-style ``*KEY*``) are masked, whether
  the name is a mapping key, a dataclass field or ``name=value`` / ``"name": "value"`` text;
- the password of a URL's userinfo (``postgresql://user:pass@host``) is masked;
- ``Bearer``/``Basic`` credentials are masked;
- known values are masked wherever they appear: those registered with
  :func:`register_secret` and the values of environment variables named like
  ``*KEY*``/``*TOKEN*``/``*SECRET*``/``*PASSWORD*`` (at least 8 characters, so that
  ``KEYBOARD=us`` does not mask every "us").
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "REDACTED",
    "clear_registered_secrets",
    "is_secret_name",
    "redact",
    "redact_document",
    "redact_text",
    "register_secret",
    "register_secrets",
    "text_redactor",
]

REDACTED = "[REDACTED]"
#: registered values shorter than this are refused: masking "db" would wreck the report
MIN_REGISTERED_LENGTH = 4
#: environment values shorter than this are not treated as secrets (KEYBOARD=us, ...)
MIN_ENV_LENGTH = 8

T = TypeVar("T")

_SECRET_WORDS = (
    r"secret|token|passw(?:or)?d|passwd|pwd|api[_-]?key|routing[_-]?key|integration[_-]?key"
    r"|private[_-]?key|access[_-]?key|signing[_-]?key|auth(?:orization)?|credentials?|cookie"
)
_SECRET_NAME = re.compile(rf"(?i)(?:{_SECRET_WORDS})")
_ENV_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD")
# Env-style upper-case names such as PD_KEY or AWS_ACCESS_KEY_ID.
_UPPER_KEY_NAME = re.compile(r"^[A-Z0-9_]*KEY[A-Z0-9_]*$")

_URL_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:@/\s]*):(?P<pw>[^/\s]*)@")
_NAMED_VALUE = re.compile(
    rf"(?i)(?P<name>[\w.\-]*(?:{_SECRET_WORDS})[\w.\-]*)(?P<sep>\"?\s*[=:]\s*\"?)"
    r"(?P<value>[^\s&\"',;{}\[\]]+)"
)
_UPPER_ASSIGN = re.compile(r"\b(?P<name>[A-Z0-9_]*KEY[A-Z0-9_]*)(?P<sep>=)(?P<value>[^\s&\"',;]+)")
_BEARER = re.compile(r"(?i)\b(?P<scheme>bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")

#: what one :func:`text_redactor` remembers: short strings, a bounded number of them
_MEMO_LENGTH = 512
_MEMO_SIZE = 4096

_lock = threading.Lock()
_registered: set[str] = set()
_pattern_cache: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)
_env_cache: tuple[dict[Any, Any], frozenset[str]] | None = None


def register_secret(value: str | None) -> bool:
    """Mask ``value`` in every report from now on (e.g. the PagerDuty routing key, a DB password).

    Returns False (and masks nothing) for values shorter than :data:`MIN_REGISTERED_LENGTH`.
    """
    if not value or len(value) < MIN_REGISTERED_LENGTH:
        return False
    with _lock:
        _registered.add(value)
    return True


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def clear_registered_secrets() -> None:
    """Forget registered values (tests use it to stay independent of each other)."""
    with _lock:
        _registered.clear()


def redact(obj: T) -> T:
    """A copy of ``obj`` with every secret masked; dicts, lists, tuples, dataclasses and str.

    Other values (numbers, None, bools) are returned as they are, except under a
    secret-looking name, where they become ``"[REDACTED]"``.
    """
    known = _known_pattern()
    redacted: T = _redact(obj, known)
    return redacted


def redact_text(text: str) -> str:
    """``text`` with every secret masked: the last pass over a finished document."""
    return _redact_str(text, _known_pattern())


def text_redactor() -> Callable[[str], str]:
    """:func:`redact_text` with the known secrets looked up once, for many strings in a row.

    Looking them up reads the whole environment (a change must be seen at once), which is
    most of the cost of a short string: a batch (the engine's store writes during an alert
    storm) takes one look for all its strings instead of one per string.
    """
    known = _known_pattern()
    memo: dict[str, str] = {}  # a storm writes the same annotations over and over

    def redact_one(text: str) -> str:
        done = memo.get(text)
        if done is None:
            done = _redact_str(text, known)
            if len(text) <= _MEMO_LENGTH and len(memo) < _MEMO_SIZE:
                memo[text] = done
        return done

    return redact_one


def redact_document(text: str) -> str:
    """Mask known secret values in a finished document (HTML, JSON, XML).

    The structural rules already ran over the data before it was rendered; this pass is the
    guard against a value that reached the page some other way (a chart label, a secret
    registered after a chart was cached). Literal matching only, so it is fast over megabytes
    and cannot mistake markup for a ``name=value`` pair.
    """
    known = _known_pattern()
    return known.sub(REDACTED, text) if known is not None else text


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name) or _UPPER_KEY_NAME.match(name))


def _redact(obj: Any, known: re.Pattern[str] | None) -> Any:
    if isinstance(obj, str):
        return _redact_str(obj, known)
    if isinstance(obj, Mapping):
        return {
            (_redact_str(k, known) if isinstance(k, str) else k): (
                _mask(v) if isinstance(k, str) and is_secret_name(k) else _redact(v, known)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_redact(v, known) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_redact(v, known) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: (
                _mask(getattr(obj, f.name))
                if is_secret_name(f.name)
                else _redact(getattr(obj, f.name), known)
            )
            for f in dataclasses.fields(obj)
            if f.init
        }
        return dataclasses.replace(obj, **changes)
    return obj


def _mask(value: Any) -> Any:
    # None, False and "" say "no secret configured", which is worth seeing in a report.
    if value is None or isinstance(value, bool) or value == "":
        return value
    return REDACTED


def _redact_str(text: str, known: re.Pattern[str] | None) -> str:
    if known is not None:
        text = known.sub(REDACTED, text)
    # Cheap pre-checks keep the 30 000 short strings of a big run fast.
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['head']}:{REDACTED}@", text)
    if " " in text:  # before the name rule, which would take "Bearer" for the value
        text = _BEARER.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    if "=" in text or ":" in text:
        text = _NAMED_VALUE.sub(_keep_name, text)
        text = _UPPER_ASSIGN.sub(_keep_name, text)
    return text


def _keep_name(match: re.Match[str]) -> str:
    if match["value"] == REDACTED or match["value"].lower() in ("bearer", "basic"):
        return match[0]
    return f"{match['name']}{match['sep']}{REDACTED}"


def _secret_env_values() -> frozenset[str]:
    """The values of secret-named environment variables, re-read only when the environment
    changed: decoding and matching every variable cost ~150 us, paid by each store
    transaction of an alert storm. ``os.environ._data`` (CPython's raw mapping, the one
    every ``os.environ`` write goes through) is compared, which is cheap and never stale."""
    global _env_cache
    raw: dict[Any, Any] | None = getattr(os.environ, "_data", None)
    if raw is not None and _env_cache is not None and _env_cache[0] == raw:
        return _env_cache[1]
    values = frozenset(
        value
        for name, value in os.environ.items()
        if _ENV_SECRET_NAME.search(name.upper()) and len(value) >= MIN_ENV_LENGTH
    )
    if raw is not None:
        _env_cache = (dict(raw), values)
    return values


def _known_pattern() -> re.Pattern[str] | None:
    """One alternation of every known secret value, longest first, rebuilt only on change."""
    global _pattern_cache
    env_values = _secret_env_values()
    with _lock:
        values = frozenset(_registered | env_values)
        cached_values, cached = _pattern_cache
        if values == cached_values:
            return cached
        pattern = (
            re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
            if values
            else None
        )
        _pattern_cache = (values, pattern)
        return pattern
