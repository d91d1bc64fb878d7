"""SLO evaluation over recorded series: verdicts, breaches and recovery as the report sees them."""

from __future__ import annotations

import threading

import pytest

from pytest_resilience import ConfigError, SLOViolation, Timeline
from pytest_resilience.slo import SLOMonitor
from pytest_resilience.timeline import FAULT_INJECTED, SLO_BREACHED, SLO_RECOVERED


def _second(line: Timeline, at: float, *, requests: int = 100, failures: int = 0, p99: float = 50):
    line.record("load", {"requests": requests, "failures": failures, "p99": p99}, at=at)


@pytest.fixture
def line() -> Timeline:
    return Timeline("t", clock=lambda: 1000.0)


def test_error_rate_breach_and_recovery_are_marked_live(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.error_rate(below=0.01, window_s=2)
    for t in range(0, 5):
        _second(line, 100 + t)
    line.mark(FAULT_INJECTED, "pod_kill", at=104.5)
    _second(line, 105, failures=30)
    _second(line, 106, failures=5)
    for t in range(7, 12):
        _second(line, 100 + t)
    kinds = [(e.kind, e.at) for e in line.events() if e.kind in (SLO_BREACHED, SLO_RECOVERED)]
    assert kinds == [(SLO_BREACHED, 105), (SLO_RECOVERED, 108)]
    figures = line.figures()
    assert figures.time_to_detect == 0.5
    assert figures.time_to_recover == 3.5


def test_assert_holds_names_slo_worst_value_and_time(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.latency(percentile=99, below_ms=2000, window_s=1)
    line.mark(FAULT_INJECTED, "latency", at=100)
    _second(line, 101, p99=300)
    _second(line, 102, p99=3500)
    _second(line, 103, p99=2500)
    with pytest.raises(SLOViolation) as info:
        monitor.assert_holds()
    message = str(info.value)
    assert "p99_latency" in message
    assert "3500 ms" in message
    assert "T0+2.0 s" in message


def test_assert_recovers_waits_for_live_samples() -> None:
    line = Timeline("live")
    monitor = SLOMonitor(line)
    monitor.error_rate(below=0.01, window_s=1)
    t0 = line.now()
    line.mark(FAULT_INJECTED, "x", at=t0)
    _second(line, t0 + 0.1, failures=50)

    def feeder() -> None:
        # samples arrive from another thread, as the Locust reader delivers them
        for i in range(1, 6):
            _second(line, t0 + 0.1 + i * 0.5)

    thread = threading.Thread(target=feeder)
    thread.start()
    recovered = monitor.assert_recovers(within_s=10, stable_s=1)
    thread.join()
    assert recovered == 1.1  # the first window without the failing second


def test_assert_recovers_fails_with_worst_value(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.error_rate(below=0.01, window_s=1)
    line.mark(FAULT_INJECTED, "x", at=100)
    for t in range(1, 6):
        _second(line, 100 + t, failures=20 + t)
    with pytest.raises(SLOViolation, match=r"did not recover within 2 s .*worst 25\.00%"):
        monitor.assert_recovers(within_s=2, stable_s=1)


def test_no_data_is_not_a_pass(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.error_rate(below=0.01)
    with pytest.raises(SLOViolation, match="no data"):
        monitor.assert_holds()


def test_availability_counts_seconds_without_a_successful_answer(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.availability(above=0.75, window_s=4)
    for t, ok in enumerate([True, True, False, False]):
        _second(line, 100 + t, failures=0 if ok else 100)
    with pytest.raises(SLOViolation, match=r"worst 50\.00%"):
        monitor.assert_holds()


def _load_second(line: Timeline, at: float, *, requests: int, users: int, total: int) -> None:
    """One second as the Locust driver streams it: completed requests, users, running total."""
    values = {"requests": requests, "failures": 0, "users": users, "total_requests": total}
    line.record("load", values, at=at)


def test_availability_ignores_seconds_before_any_user_was_answered(line: Timeline) -> None:
    # Locust still spawning: the first partial second has users on their way but no answer.
    monitor = SLOMonitor(line)
    monitor.availability(above=0.99, window_s=10)
    _load_second(line, 100.9, requests=0, users=4, total=0)
    total = 0
    for t in range(1, 6):
        total += 300
        _load_second(line, 100.9 + t, requests=300, users=20, total=total)
    monitor.assert_holds()
    first = monitor.evaluations("availability")[0]
    assert (first.value, first.held) == (None, None)  # no data, not down


def test_availability_without_a_single_request_is_no_data(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    monitor.availability(above=0.99, window_s=10)
    for t in range(3):
        _load_second(line, 100 + t, requests=0, users=0, total=0)
    with pytest.raises(SLOViolation, match="no data to judge"):
        monitor.assert_holds()
    assert monitor.verdicts()[0]["held"] is False  # no data is not "held"


def test_availability_counts_a_hang_after_users_were_answered_as_down(line: Timeline) -> None:
    # Requests that hang (packets dropped) complete in no second: users asked, nobody answered.
    monitor = SLOMonitor(line)
    monitor.availability(above=0.99, window_s=4)
    _load_second(line, 100, requests=300, users=20, total=300)
    _load_second(line, 101, requests=300, users=20, total=600)
    _load_second(line, 102, requests=0, users=20, total=600)
    _load_second(line, 103, requests=0, users=20, total=600)
    with pytest.raises(SLOViolation, match=r"worst 50\.00%"):
        monitor.assert_holds()


class _SilentAtFirst:
    """A probe with nothing to say for its first ``silent`` reads (a rate before two scrapes)."""

    def __init__(self, silent: int, value: float | None = 0.0) -> None:
        self.silent = silent
        self.value = value
        self.reads = 0

    def __call__(self) -> float | None:
        self.reads += 1
        return None if self.reads <= self.silent else self.value


def test_steady_state_check_waits_for_a_probes_first_reading() -> None:
    line = Timeline("first-reading")
    monitor = SLOMonitor(line, poll_interval_s=0.05)
    probe = _SilentAtFirst(silent=4)
    try:
        monitor.probe("error_rate", probe, below=0.01)
        monitor.assert_holds()  # right after declaring: no reading yet, so it waits
        assert probe.reads > 4
        assert [s.values["value"] for s in line.series("error_rate")][:1] == [0.0]
    finally:
        monitor.close()


def test_a_probe_that_never_reads_fails_naming_the_slo_and_the_wait() -> None:
    line = Timeline("never")
    monitor = SLOMonitor(line, poll_interval_s=0.05)
    try:
        monitor.probe(
            "checkout_errors", _SilentAtFirst(silent=10**9), below=0.01, first_reading_s=0.3
        )
        with pytest.raises(SLOViolation) as info:
            monitor.assert_holds()
        message = str(info.value)
        assert "'checkout_errors'" in message
        assert "no data to judge" in message and "within 0.3 s" in message
    finally:
        monitor.close()


def test_judging_a_past_range_does_not_wait(line: Timeline) -> None:
    monitor = SLOMonitor(line, poll_interval_s=3600)
    monitor.probe("queue_depth", lambda: None, below=10, first_reading_s=3600)
    try:
        with pytest.raises(SLOViolation, match="no reading in that time"):
            monitor.assert_holds(since=900, until=990)  # the clock says 1000: over already
    finally:
        monitor.close()


def test_failure_budget(line: Timeline) -> None:
    monitor = SLOMonitor(line)
    line.mark(FAULT_INJECTED, "x", at=100)
    _second(line, 99, failures=500)  # before the fault: not charged to it
    _second(line, 101, failures=7)
    assert monitor.assert_failures_within(10) == 7
    with pytest.raises(SLOViolation, match=r"7 requests failed .* budget for this scenario is 5"):
        monitor.assert_failures_within(5)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.error_rate(below=5), "fraction in 0..1"),
        (lambda m: m.latency(below_ms=10, percentile=90), "percentile must be 50, 95 or 99"),
        (lambda m: m.error_rate(below=0.1, window_s=0), "window_s must be > 0"),
        (lambda m: m.assert_holds("nope"), "no SLO declared"),
    ],
)
def test_bad_objectives_are_named(line: Timeline, call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call(SLOMonitor(line))
