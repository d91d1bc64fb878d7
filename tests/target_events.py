"""Target events collected for tests, waited on with a deadline (never a sleep)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from pytest_resilience.targets.base import EventKind, TargetEvent


class Events:
    """Subscribe it to a target (``target.subscribe(events)``); read or wait on what came."""

    def __init__(self) -> None:
        self.items: list[TargetEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: TargetEvent) -> None:
        with self._cond:
            self.items.append(event)
            self._cond.notify_all()

    def of(self, kind: EventKind, pod: str | None = None) -> list[TargetEvent]:
        with self._cond:
            return [e for e in self.items if e.kind == kind and pod in (None, e.pod)]

    def wait_for(
        self, predicate: Callable[[list[TargetEvent]], bool], timeout: float = 15.0
    ) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                pytest.fail(f"event condition not met within {timeout}s; events: {self._seen()}")

    def wait_for_kind(
        self,
        kind: EventKind,
        *,
        pod: str | None = None,
        node: str | None = None,
        timeout: float = 20.0,
    ) -> TargetEvent:
        """The latest ``kind`` event (for that pod / node), once one has arrived."""

        def found() -> list[TargetEvent]:
            return [e for e in self.of(kind, pod) if node in (None, e.node)]

        with self._cond:
            if not self._cond.wait_for(found, timeout=timeout):
                pytest.fail(f"no {kind.value} event (pod={pod}, node={node}); {self._seen()}")
        return found()[-1]

    def _seen(self) -> list[tuple[str, str | None, str | None, str]]:
        return [(e.kind.value, e.pod, e.node, e.detail) for e in self.items]
