"""A PromQL SLO from the README in its steady state, through a real Prometheus.

A real /metrics endpoint (prometheus-client in a subprocess) serves the demo's request
counter with 200s only, the way a healthy demo does: no 5xx series exists. The managed
Prometheus scrapes it every second. ``slo.promql("error_rate", below=0.01)`` is declared
before the first request, as a user following the README would, and the steady-state
check runs at once: it must wait for the first reading (a rate needs two scrapes) and
then judge 0 errors, with no ``wait_scraped`` anywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from pytest_resilience.prometheus import ManagedPrometheus
from pytest_resilience.slo import SLOMonitor
from pytest_resilience.timeline import Timeline

POD = {"service": "api", "pod": "api-0", "node": "n1"}


def _need_prometheus() -> None:
    if shutil.which("prometheus") is None:
        reason = "prometheus not on PATH (Debian package prometheus)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this is an error, not a skip")
        pytest.skip(reason)


class _HealthyService:
    """The demo's request counter in its own process, counting 200s only while serving."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_resilience.prometheus.settable_exporter"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("port "), line
        self.address = f"127.0.0.1:{int(line.split()[1])}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start_serving(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        while not self._stop.wait(0.1):  # ten requests a second, all answered 200
            self.proc.stdin.write("counter demo_requests 1 route=/items/{id} status=200\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture
def service() -> Iterator[_HealthyService]:
    running = _HealthyService()
    try:
        yield running
    finally:
        running.stop()


def test_readme_error_rate_slo_waits_for_its_first_reading_then_reads_zero(
    service: _HealthyService,
):
    _need_prometheus()
    with ManagedPrometheus(targets=[(service.address, POD)]) as prometheus:
        timeline = Timeline("promql-steady-state")
        slo = SLOMonitor(timeline, prometheus=prometheus.url, poll_interval_s=0.2)
        try:
            slo.promql("error_rate", below=0.01)  # no request served yet: no reading
            assert timeline.series("error_rate") == []
            service.start_serving()
            slo.assert_holds()  # the steady-state check, at once: waits, then judges
            readings = [s.values["value"] for s in timeline.series("error_rate")]
            assert readings and set(readings) == {0.0}
        finally:
            slo.close()
