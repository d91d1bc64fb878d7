"""A small circuit breaker for the demo's database calls.

Written here rather than taken from a library: pybreaker's async support goes through Tornado,
and the asyncio forks (aiobreaker and friends) are barely maintained. What the demo needs is
forty lines: count consecutive failures, open for a cooldown, then let one trial call through
(half-open) and close on its success.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Fails fast while a dependency is known to be down, instead of piling up waiting calls."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0, got {cooldown_s!r}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        # When the half-open trial call was let through; a trial that never reports back
        # (its caller was cancelled) must not keep the breaker shut forever.
        self._trial_at: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def is_open(self) -> bool:
        """True until the breaker has closed again (open and half-open both count)."""
        return self._opened_at is not None

    def allow(self) -> bool:
        """May a call go through now? In half-open state, one trial call at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        if self._trial_at is not None and now - self._trial_at < self.cooldown_s:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_at = None

    def record_failure(self) -> None:
        self._failures += 1
        self._trial_at = None
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            # A failed trial re-opens for a fresh cooldown.
            self._opened_at = self._clock()
