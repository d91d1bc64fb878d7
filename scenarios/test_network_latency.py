"""Network latency: 500 ms on both of the API's dependencies, users barely notice.

Hypothesis: with 500 ms added to every answer from Postgres and from Redis (Toxiproxy
latency toxics on the proxies the API reaches them through), the API still answers every
request within its timeouts: error rate stays under 1% and p99 latency under 2 s for as
long as the latency lasts, and both hold again after it is removed.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.chaos

HOLD_S = 10  # seconds of load under the fault


def test_500ms_on_postgres_and_redis_keeps_errors_and_p99_within_slo(load, latency, slo, timeline):
    slo.error_rate(below=0.01, window_s=5)
    slo.latency(percentile=99, below_ms=2000, window_s=5)

    with load(users=20, spawn_rate=20) as run:
        run.wait_for_samples(5, timeout=40)
        slo.assert_holds()  # steady state first

        with latency("postgres", ms=500), latency("redis", ms=500):
            slowed_at = timeline.now()
            run.wait_for_samples(len(run.wait_for_samples(0)) + HOLD_S, timeout=HOLD_S + 30)
            slo.assert_holds("error_rate", "p99_latency", since=slowed_at)

        slo.assert_recovers(within_s=30)
