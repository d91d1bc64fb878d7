"""The local target room's shared fixture: the recorder its target's events go to."""

from __future__ import annotations

import pytest
from target_events import Events


@pytest.fixture
def events() -> Events:
    return Events()
