"""A normal chaos session: starting the target settles what a killed session left open."""

from __future__ import annotations

import pytest


@pytest.mark.chaos
def test_target_comes_up(chaos_target):
    assert chaos_target.pods()
