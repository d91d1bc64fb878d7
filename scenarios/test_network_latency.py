"""Network latency: 300 ms on both of the API's dependencies, users barely notice.

Hypothesis: with 300 ms added to every answer from Postgres and from Redis (Toxiproxy
latency toxics on the proxies the API reaches them through), the API still answers every
request within its timeouts: error rate stays under 1% and p99 latency under 2 s for as
long as the latency lasts, and both hold again after it is removed.

Why 300 ms against a 2 s p99. The demo load's slowest request is a cold read: Redis GET
(a miss), Postgres SELECT, Redis SET, three round trips one after the other, each slowed
by the toxic, so 3 x 300 = 900 ms; a write is two (600 ms), a hot read one. The p99 of a
second of ~40 requests is its slowest request, so the bound must hold for that path.
900 ms is 45% of 2 s: the rest is headroom for a loaded 2-core CI runner, where a process
starved of CPU for ~0.5 s was measured (500 ms toxics gave a worst of 2022 ms against
1500 ms of round trips). What it still detects: a database or cache timeout below 300 ms
(cold reads and writes answer 503: error rate far above 1%), and any path that makes the
latency pile up rather than pass through (a retry after a timeout, a new connection per
request, requests queueing on a pool) once it exceeds 2.2x the three round trips. And the
fault must be felt at all: a median request slower than the toxic proves requests went
through the slowed proxies, so a scenario that injects nothing cannot pass.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.chaos

HOLD_S = 10  # seconds of load under the fault
LATENCY_MS = 300  # added to every answer from Postgres and from Redis
P99_BOUND_MS = 2000  # the service's objective, as in every scenario
#: the deepest request path of the demo load (cold read: Redis GET, Postgres SELECT, Redis SET)
ROUND_TRIPS = 3
assert ROUND_TRIPS * LATENCY_MS <= 0.5 * P99_BOUND_MS, "the fault leaves no headroom"


def test_300ms_on_postgres_and_redis_keeps_errors_and_p99_within_slo(load, latency, slo, timeline):
    slo.error_rate(below=0.01, window_s=5)
    slo.latency(percentile=99, below_ms=P99_BOUND_MS, window_s=5)

    with load(users=20, spawn_rate=20) as run:
        run.wait_for_samples(5, timeout=40)
        slo.assert_holds()  # steady state first

        with latency("postgres", ms=LATENCY_MS), latency("redis", ms=LATENCY_MS):
            slowed_at = timeline.now()
            samples = run.wait_for_samples(
                len(run.wait_for_samples(0)) + HOLD_S, timeout=HOLD_S + 30
            )
            slo.assert_holds("error_rate", "p99_latency", since=slowed_at)

        # whole seconds after the toxics were in place: every request made a slowed round trip
        under_fault = [s for s in samples if s.start >= slowed_at + 1 and s.p50 is not None]
        assert under_fault, "no second of load under the fault"
        fastest = min(s.p50 for s in under_fault)
        assert fastest >= LATENCY_MS, (
            f"median request took {fastest:.0f} ms under a {LATENCY_MS} ms latency on both "
            "dependencies: the requests did not go through the slowed proxies"
        )

        slo.assert_recovers(within_s=30)
