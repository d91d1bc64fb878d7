"""SLOs judged on real Locust load: what the first seconds of a run look like to the monitor.

The target is tests/load_fixtures/http_target.py (a real aiohttp server in a subprocess);
its first answers are slow, as a cold service's are, so the first second of the run ends
before any request came back. That second is "no data", not downtime.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_resilience.load import start_load
from pytest_resilience.slo import SLOMonitor
from pytest_resilience.timeline import Timeline

FIXTURES = Path(__file__).parents[1] / "load_fixtures"
#: longer than the first (partial) second of the run: no request completes in it
FIRST_ANSWER_DELAY_MS = 1500
USERS = 5


@pytest.fixture
def slow_start_target() -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(FIXTURES / "http_target.py"),
            "--delay-ms",
            str(FIRST_ANSWER_DELAY_MS),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = json.loads(process.stdout.readline())["port"]  # blocks until it listens
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _requests_seen(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def _set_delay(url: str, delay_ms: float) -> None:
    request = urllib.request.Request(f"{url}/_control?delay_ms={delay_ms}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def test_seconds_before_the_first_answer_are_not_downtime(slow_start_target: str) -> None:
    timeline = Timeline("spawn")
    monitor = SLOMonitor(timeline)
    monitor.availability(above=0.99, window_s=10)
    with start_load(
        host=slow_start_target,
        users=USERS,
        spawn_rate=100,  # every user sends its first request at once
        timeline=timeline,
        env={"LOAD_FIXTURE_WAIT_S": "0.05"},
        locustfile=FIXTURES / "locustfile.py",
    ) as run:
        # Every user's first request is on its way (and waits 1.5 s); later ones are quick.
        deadline = time.monotonic() + 30
        while _requests_seen(slow_start_target) < USERS:
            assert time.monotonic() < deadline, "the users' first requests never arrived"
            time.sleep(0.02)
        _set_delay(slow_start_target, 0)
        first = run.wait_for_samples(1, timeout=30)[0]
        assert first.requests == 0 and first.users > 0  # users asked, nothing came back yet
        samples = run.wait_for_samples(5, timeout=30)
        assert all(s.requests > 0 for s in samples[2:])
        monitor.assert_holds()
