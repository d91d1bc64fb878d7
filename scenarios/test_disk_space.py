"""Disk space: the database's volume fills to 90%; nothing is corrupted, and it shows.

Hypothesis: rows written (with their checksums) before the disk fills are intact after it:
every one still verifies against the checksum the API returned when it was stored. While
the volume is full, its usage as the platform counts it (``df`` of the local volume, ``du``
against the emptyDir's sizeLimit as the kubelet does) reads >= 0.9, so an alert rule on it
fires (the engine's own rule evaluator) and resolves once the space is back. Under load the
service recovers within 30 s of the revert.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from pytest_resilience.engine.alerts import Alert, Rule, RuleEvaluator

# The database volume's usage is read where the platform reads it (the target).
pytestmark = pytest.mark.chaos(requires=["volume_usage"])

ROWS = range(9001, 9041)  # clear of the seeded ids (1..1000) and the load's writes (1001..1100)
DISK_ALERT = Rule("DiskSpaceLow", "disk_use", "above", 0.85, "postgres", for_s=1.0)
ALERT_TIMEOUT_S = 20.0


def test_disk_at_90_percent_corrupts_nothing_and_fires_an_alert(chaos_target, load, disk_fill, slo):
    slo.error_rate(below=0.01, window_s=5)
    slo.latency(percentile=99, below_ms=2000, window_s=5)
    api = chaos_target.endpoint("api")
    written = {item: _post(api, item) for item in ROWS}  # id -> checksum, before the fault

    def disk_use() -> float | None:
        return chaos_target.volume_usage("postgres")

    with load(users=10, spawn_rate=10) as run, _alerts(disk_use) as alerts:
        run.wait_for_samples(5, timeout=40)
        slo.assert_holds()
        assert (disk_use() or 0.0) < DISK_ALERT.threshold

        filled = disk_fill("postgres", percent=90)
        firing = alerts.wait(lambda a: a.name == DISK_ALERT.alert and a.firing)
        assert firing.value is not None and firing.value >= 0.9

        filled.revert()
        alerts.wait(lambda a: a.name == DISK_ALERT.alert and not a.firing)
        slo.assert_recovers(within_s=30)

    for item, checksum in written.items():
        status, body = _get(f"{api}/items/{item}/verify")
        assert (status, body["ok"], body["stored_checksum"]) == (200, True, checksum), body


class _Alerts:
    """Alerts the rule evaluator submitted, waited on with a deadline."""

    def __init__(self) -> None:
        self.items: list[Alert] = []
        self._cond = threading.Condition()

    def submit(self, alert: Alert) -> None:
        with self._cond:
            self.items.append(alert)
            self._cond.notify_all()

    def wait(self, match) -> Alert:  # type: ignore[no-untyped-def]
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(match(a) for a in self.items), timeout=ALERT_TIMEOUT_S
            ):
                pytest.fail(f"no such alert within {ALERT_TIMEOUT_S:g} s; got {self.items}")
            return next(a for a in self.items if match(a))


@contextmanager
def _alerts(disk_use: Callable[[], float | None]) -> Iterator[_Alerts]:
    """Evaluate the disk rule twice a second, as the engine's evaluator would."""
    alerts = _Alerts()
    evaluator = RuleEvaluator([DISK_ALERT], {"disk_use": disk_use}, alerts.submit)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.5):
            evaluator.tick()

    thread = threading.Thread(target=tick, name="disk-alert-rule", daemon=True)
    thread.start()
    try:
        yield alerts
    finally:
        stop.set()
        thread.join(timeout=5)


def _post(api: str, item: int) -> str:
    """Store one row; its checksum as the API computed it. A database still starting (503)
    is waited for, with a deadline."""
    payload = json.dumps({"id": item, "payload": {"blob": secrets.token_hex(64)}}).encode()
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(
            f"{api}/items", data=payload, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
                return json.loads(response.read())["checksum"]
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # retry period while the schema is being created


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
