"""The pod-kill scenario in Python: the same experiment as pod_kill_api.yaml."""

from __future__ import annotations

import pytest


@pytest.mark.chaos
def test_api_survives_losing_a_replica(load, pod_kill, slo, timeline):
    slo.error_rate(below=0.01, window_s=5)
    slo.latency(percentile=99, below_ms=2000, window_s=5)

    with load(users=20, spawn_rate=20) as run:
        run.wait_for_samples(5, timeout=30)
        slo.assert_holds()  # steady state first: no point breaking a broken system

        killed = pod_kill("app=api", count=1)
        killed.revert()  # for pod_kill: wait until the replacement is ready (<= 30 s)

        slo.assert_recovers(within_s=30)
        slo.assert_failures_within(200)

    assert timeline.figures().time_to_recover is not None
