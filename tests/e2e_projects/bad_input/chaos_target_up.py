"""Two chaos tests that need the target: both must fail with the target's reason."""

from __future__ import annotations

import pytest


@pytest.mark.chaos
def test_first(chaos_target):
    assert chaos_target.pods()


@pytest.mark.chaos
def test_second(chaos_target):
    assert chaos_target.pods()
