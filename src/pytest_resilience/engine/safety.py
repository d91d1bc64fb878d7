"""Guard rails that keep auto-remediation from making an outage worse.

- cooldown per (alert, target): a flapping alert gets one remediation per cooldown;
- a cap on actions per window, per target and overall: a storm cannot restart the world;
- a circuit breaker: after ``breaker_failures`` remediations in a row that did not fix
  their alert, stop acting and escalate everything until ``breaker_reset_s`` has passed
  (then one trial: success closes it, failure re-opens it).

All state lives in the store (action counts come from the action log itself), so a
restarted engine keeps its cooldowns and an open breaker stays open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from .store import Store

__all__ = ["Decision", "Safety", "SafetyPolicy"]


@dataclass(frozen=True)
class SafetyPolicy:
    cooldown_s: float = 300.0
    window_s: float = 3600.0
    max_actions_per_target: int = 5
    max_actions_total: int = 30
    breaker_failures: int = 3
    breaker_reset_s: float = 900.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


_BREAKER = "breaker"


class _Breaker(TypedDict):
    """The breaker's state as stored under ``_BREAKER`` (JSON written by this module)."""

    failures: int
    open_until: float


class Safety:
    def __init__(self, store: Store, policy: SafetyPolicy) -> None:
        self.store = store
        self.policy = policy

    def admit(self, alert: str, target: str, now: float) -> Decision:
        """May a new incident for (alert, target) act? Checked before the incident opens."""
        with self.store.transaction():  # the store's lock: one lock order
            if self.breaker_open(now):
                return Decision(False, "circuit breaker open")
            until = self.store.get_state(_cooldown_key(alert, target), 0.0)
            if now < until:
                return Decision(False, "cooldown")
            return self._caps(target, now)

    def begin(self, alert: str, target: str, now: float) -> None:
        with self.store.transaction():  # the store's lock: one lock order
            self.store.set_state(_cooldown_key(alert, target), now + self.policy.cooldown_s)

    def allow_action(self, target: str, now: float) -> Decision:
        with self.store.transaction():  # the store's lock: one lock order
            return self._caps(target, now)

    def _caps(self, target: str, now: float) -> Decision:
        total, on_target = self.store.action_counts(now - self.policy.window_s, target)
        if on_target >= self.policy.max_actions_per_target:
            return Decision(False, f"action cap for {target!r} reached")
        if total >= self.policy.max_actions_total:
            return Decision(False, "overall action cap reached")
        return Decision(True)

    def breaker_open(self, now: float) -> bool:
        state: _Breaker = self.store.get_state(_BREAKER, {"failures": 0, "open_until": 0.0})
        return now < state["open_until"]

    def record_outcome(self, fixed: bool, now: float) -> bool:
        """Count a finished remediation; True if this outcome opened the breaker."""
        with self.store.transaction():  # the store's lock: one lock order
            state = self.store.get_state(_BREAKER, {"failures": 0, "open_until": 0.0})
            if fixed:
                state = {"failures": 0, "open_until": 0.0}
                opened = False
            else:
                state["failures"] += 1
                opened = state["failures"] >= self.policy.breaker_failures
                if opened:
                    state["open_until"] = now + self.policy.breaker_reset_s
            self.store.set_state(_BREAKER, state)
            return opened


def _cooldown_key(alert: str, target: str) -> str:
    return f"cooldown:{alert}|{target}"
