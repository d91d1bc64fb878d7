"""One exception ladder for the package, so callers catch by meaning, not by module.

Every message states the broken rule and names the file, field or value involved, so an
SRE reading a CI log knows what to change without opening the source.
"""

from __future__ import annotations


class ResilienceError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ResilienceError):
    """A configuration file, option or scenario is malformed.

    ``source`` names the file (``path`` or ``path:line``), ``field`` the dotted field,
    ``line`` the 1-based line where it is known, for tools that jump to it.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.field = field
        self.line = line
        where = ", ".join(part for part in (source, f"field {field!r}" if field else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


class TargetError(ResilienceError):
    """The target could not do what was asked (start, kill, scale, ...)."""


class SelectorMatchedNothing(TargetError):
    """A label selector matched no pod: almost always a typo, never a silent no-op."""


class NotAllowed(TargetError):
    """A safety rule refused the operation before anything was changed."""


class PrivilegeError(ResilienceError):
    """The fault needs a privilege (root, CAP_NET_ADMIN, ...) this process lacks."""


class FaultError(ResilienceError):
    """A fault could not be injected or reverted."""


class SLOViolation(AssertionError):
    """An SLO did not hold, or did not recover in time; raised as a test failure."""
