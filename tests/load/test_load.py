"""The load generator against a real HTTP server, with Locust in its own process.

The target (tests/load_fixtures/http_target.py) is a small aiohttp server in a subprocess
that fails exactly every K-th request and sleeps a set delay, both changeable while it runs,
so the failure share and latency the users see can be checked against known values.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pytest_resilience.errors import ConfigError, FaultError
from pytest_resilience.load import (
    DEFAULT_LOCUSTFILE,
    LoadError,
    LoadSample,
    LocustfileError,
    start_load,
)
from pytest_resilience.timeline import LOAD_STARTED, LOAD_STOPPED, Timeline

FIXTURES = Path(__file__).parents[1] / "load_fixtures"
LOCUSTFILE = FIXTURES / "locustfile.py"


@dataclass
class HttpTarget:
    process: subprocess.Popen[str]
    url: str

    def control(self, **settings: float) -> None:
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        request = urllib.request.Request(f"{self.url}/_control?{query}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def http_target() -> Iterator[Callable[..., HttpTarget]]:
    started: list[subprocess.Popen[str]] = []

    def start(*, fail_every: int = 0, delay_ms: float = 0) -> HttpTarget:
        process = subprocess.Popen(
            [
                sys.executable,
                str(FIXTURES / "http_target.py"),
                *("--fail-every", str(fail_every), "--delay-ms", str(delay_ms)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        port = json.loads(process.stdout.readline())["port"]  # blocks until it listens
        return HttpTarget(process, f"http://127.0.0.1:{port}")

    yield start
    for process in started:
        process.terminate()
        process.wait(10)
        if process.stdout:
            process.stdout.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_stats_stream_every_second_and_failure_share_matches_server(http_target) -> None:
    target = http_target(fail_every=5)  # the server fails exactly 20 % of requests
    timeline = Timeline("t")
    with start_load(host=target.url, users=4, locustfile=LOCUSTFILE, timeline=timeline) as run:
        samples = run.wait_for_samples(4, timeout=30)
    samples = run.samples
    server = target.counts()

    # one sample per wall-clock second: interior intervals are whole seconds, back to back
    interior = samples[1:-1]
    assert interior, samples
    assert all(s.interval_s == 1.0 and s.at == int(s.at) for s in interior)
    assert all(b.at - a.at == pytest.approx(1.0) for a, b in itertools.pairwise(interior))
    assert samples[0].start == pytest.approx(timeline.events(LOAD_STARTED)[0].at)

    totals = run.totals
    assert totals.requests == sum(s.requests for s in samples) >= 50
    assert totals.failures == sum(s.failures for s in samples)
    assert totals.error_rate == pytest.approx(0.2, abs=0.03)
    assert totals.error_rate == pytest.approx(server["failures"] / server["requests"], abs=0.03)
    assert run.error_rate() == pytest.approx(totals.error_rate)

    # the timeline got every sample and both marks
    recorded = timeline.series("load")
    assert [s.at for s in recorded] == [s.at for s in samples]
    assert recorded[1].values["requests"] == samples[1].requests
    stopped = timeline.events(LOAD_STOPPED)
    assert [e.detail["reason"] for e in stopped] == ["stopped"]
    assert stopped[0].detail["total_requests"] == totals.requests


def test_locust_and_gevent_stay_out_of_the_pytest_process(http_target) -> None:
    target = http_target()
    with start_load(host=target.url, users=1, locustfile=LOCUSTFILE) as run:
        run.wait_for_samples(1, timeout=30)
    assert run.totals.requests > 0
    assert "gevent" not in sys.modules
    assert "locust" not in sys.modules


def test_percentiles_follow_an_injected_server_delay(http_target) -> None:
    target = http_target()
    with start_load(host=target.url, users=4, locustfile=LOCUSTFILE) as run:
        run.wait_for_samples(2, timeout=30)
        before = run.percentile(50)
        target.control(delay_ms=200)
        changed_at = time.time()
        while not any(s.start >= changed_at and s.requests for s in run.samples):
            run.wait_for_samples(len(run.samples) + 1, timeout=30)
        after = [s for s in run.samples if s.start >= changed_at and s.requests]
    assert before < 200
    assert run.percentile(50, since=changed_at) >= 200
    assert run.percentile(99, since=changed_at) >= 200
    assert all(s.p50 is not None and s.p50 >= 200 for s in after)
    assert math.isnan(run.percentile(50, since=time.time() + 60))  # no data is not a number


def test_stop_leaves_no_process_and_is_idempotent(http_target) -> None:
    target = http_target()
    run = start_load(host=target.url, users=2, locustfile=LOCUSTFILE)
    run.wait_for_samples(1, timeout=30)
    pid = run.pid
    first = run.stop()
    assert run.stop() == first == run.totals
    assert not run.running
    assert not psutil.pid_exists(pid)
    assert run.error is None


def test_stop_kills_a_driver_that_ignores_sigterm(http_target) -> None:
    target = http_target()
    timeline = Timeline("t")
    run = start_load(host=target.url, users=1, locustfile=FIXTURES / "spin.py", timeline=timeline)
    pid = run.pid
    run.stop(timeout=1)
    assert not psutil.pid_exists(pid)
    assert [e.detail["reason"] for e in timeline.events(LOAD_STOPPED)] == ["killed"]


def test_missing_locustfile_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "locustfile.py"
    with pytest.raises(LocustfileError, match=re.escape(str(missing))) as caught:
        start_load(host="http://127.0.0.1:9", locustfile=missing)
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, FaultError)


def test_locustfile_without_user_class_is_refused(http_target) -> None:
    target = http_target()
    path = FIXTURES / "no_users.py"
    with pytest.raises(LocustfileError, match="defines no User class") as caught:
        start_load(host=target.url, locustfile=path)
    assert str(path) in str(caught.value)


def test_broken_locustfile_names_the_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import locust\nraise RuntimeError('cannot reach config server')\n")
    with pytest.raises(LocustfileError, match="cannot reach config server") as caught:
        start_load(host="http://127.0.0.1:9", locustfile=broken)
    assert str(broken) in str(caught.value)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"field 'host'.*'localhost:8080'"):
        start_load(host="localhost:8080", locustfile=LOCUSTFILE)
    with pytest.raises(ConfigError, match="field 'users'"):
        start_load(host="http://127.0.0.1:9", users=0, locustfile=LOCUSTFILE)


@pytest.mark.skipif(not DEFAULT_LOCUSTFILE.is_file(), reason="demo locustfile not written yet")
def test_unreachable_host_counts_failures_not_errors_with_the_default_locustfile() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    timeline = Timeline("t")
    with start_load(host=f"http://127.0.0.1:{port}", users=2, timeline=timeline) as run:
        run.wait_for_samples(2, timeout=30)
    assert timeline.events(LOAD_STARTED)[0].detail["locustfile"] == str(DEFAULT_LOCUSTFILE)
    totals = run.totals
    assert totals.requests > 0
    assert totals.failures == totals.requests
    assert run.error_rate() == 1.0
    assert run.error is None


def test_driver_crash_is_a_load_error_with_its_stderr(http_target) -> None:
    target = http_target()
    timeline = Timeline("t")
    run = start_load(
        host=target.url, users=1, locustfile=FIXTURES / "crashing.py", timeline=timeline
    )
    with pytest.raises(LoadError, match=r"(?s)exited with code 3.*driver going down on purpose"):
        run.wait_for_samples(5, timeout=30)
    with pytest.raises(LoadError):
        run.__exit__(None, None, None)
    assert [e.detail["reason"] for e in timeline.events(LOAD_STOPPED)] == ["crashed"]


def test_driver_dies_with_a_sigkilled_parent(http_target) -> None:
    """The driver spins without yielding, so only the kernel's PDEATHSIG can end it."""
    target = http_target()
    script = (
        "import sys\n"
        "from pytest_resilience.load import start_load\n"
        f"run = start_load(host={target.url!r}, users=1, locustfile={str(FIXTURES / 'spin.py')!r})"
        "\n"
        "print(run.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None and parent.stdin is not None
    driver = int(parent.stdout.readline())
    try:
        assert not _gone(driver)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(driver, timeout=10)
    finally:
        if not _gone(driver):
            os.kill(driver, signal.SIGKILL)
        parent.stdin.close()
        parent.stdout.close()


def test_sample_from_line_keeps_undefined_percentiles_out_of_the_timeline() -> None:
    idle = LoadSample.from_line(
        {
            "at": 10.0,
            "interval_s": 1.0,
            "requests": 0,
            "failures": 0,
            "p50": None,
            "p95": None,
            "p99": None,
            "max": None,
            "rps": 0.0,
            "users": 3,
            "total_requests": 7,
            "total_failures": 1,
            "histogram": {},
        }
    )
    assert math.isnan(idle.error_rate)
    assert "p50" not in idle.values() and "error_rate" not in idle.values()
    assert idle.values()["users"] == 3


def test_run_time_ends_the_run_by_itself(http_target) -> None:
    target = http_target()
    timeline = Timeline("t")
    run = start_load(
        host=target.url, users=2, locustfile=LOCUSTFILE, timeline=timeline, run_time=1.5
    )
    totals = run.wait(timeout=30)
    assert totals.requests == sum(s.requests for s in run.samples) > 0
    assert not psutil.pid_exists(run.pid)
    assert [e.detail["reason"] for e in timeline.events(LOAD_STOPPED)] == ["run_time"]
