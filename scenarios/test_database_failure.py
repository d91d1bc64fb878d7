"""Database failure: Postgres drops every packet, the API degrades instead of going down.

Hypothesis: with Postgres unreachable (an iptables DROP on its port, so calls hang rather
than fail fast), each API replica's circuit breaker opens; hot items are still served from
Redis, so the service stays available and the error rate stays under the degraded bound
(the demo load's cold reads and writes, 10% of requests, need the database). Once the block
is lifted, error rate and p99 latency are back within their objectives within 30 s.
"""

from __future__ import annotations

import time

import pytest

from pytest_resilience.probes import BuiltinProbes
from pytest_resilience.slo import Objective

# The breakers are read from each API pod's /metrics (BuiltinProbes).
pytestmark = pytest.mark.chaos(requires=["pod_metrics"])

#: error rate while the database is gone: cold reads (6%) and writes (4%) of the demo load
#: fail, plus the requests that time out before the breaker opens
DEGRADED_ERROR_RATE = 0.25
#: Availability is judged per second: a second is up when a request in it succeeded. 80%
#: over 10 s allows two seconds in ten without a successful answer (the load generator
#: counts requests when they complete, so one starved of CPU on a shared runner shows an
#: empty second while the service is fine) and fails on an outage of three seconds or more;
#: what it is here to catch, every request failing once the database is gone (no cached
#: reads served), reads 0%. 99% over 5 s tolerated no second at all.
AVAILABILITY = 0.8
AVAILABILITY_WINDOW_S = 10
BLOCK_S = 10  # seconds of load under the fault
BREAKER_TIMEOUT_S = 15.0


def test_postgres_lost_breaker_opens_service_stays_available(
    chaos_target, load, network_block, slo, timeline
):
    slo.error_rate(below=0.01, window_s=5)
    slo.latency(percentile=99, below_ms=2000, window_s=5)
    slo.availability(above=AVAILABILITY, window_s=AVAILABILITY_WINDOW_S)
    slo.add(Objective("degraded_error_rate", "error_rate", DEGRADED_ERROR_RATE, window_s=5))
    probes = BuiltinProbes(chaos_target, timeline)

    try:
        with load(users=20, spawn_rate=20) as run:
            run.wait_for_samples(5, timeout=40)
            slo.assert_holds()  # steady state first
            assert not _breakers_open(probes), "a breaker is open before the fault"

            blocked = network_block("app=postgres", direction="ingress", action="drop")
            blocked_at = timeline.now()
            _wait_every_breaker_open(probes)
            run.wait_for_samples(len(run.wait_for_samples(0)) + BLOCK_S, timeout=BLOCK_S + 30)
            slo.assert_holds("availability", "degraded_error_rate", since=blocked_at)

            blocked.revert()
            unblocked_at = timeline.now()
            slo.assert_recovers(
                "error_rate", "p99_latency", "availability", within_s=30, since=unblocked_at
            )
    finally:
        probes.close()


def _breakers_open(probes: BuiltinProbes) -> set[str]:
    return {
        pod
        for pod, scrape in probes.scrape().items()
        if scrape.get("demo_circuit_breaker_open") == 1.0
    }


def _wait_every_breaker_open(probes: BuiltinProbes) -> None:
    """Each replica's breaker seen open at least once (it half-opens for trial calls)."""
    pods = {pod.name for pod in probes.pods()}
    seen: set[str] = set()
    deadline = time.monotonic() + BREAKER_TIMEOUT_S
    while seen != pods:
        seen |= _breakers_open(probes)
        if time.monotonic() > deadline:
            pytest.fail(f"circuit breaker never opened on {sorted(pods - seen)}")
        time.sleep(0.2)  # scrape period
