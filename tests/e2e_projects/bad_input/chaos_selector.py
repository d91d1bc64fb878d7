"""A pod_kill whose selector matches no pod: a clear failure, not a no-op."""

from __future__ import annotations

import pytest


@pytest.mark.chaos
def test_kill_nothing(pod_kill):
    pod_kill("app=nope")
