"""The report room's shared fixture: Debian's Chromium (missing: a skip naming the install,
on CI a failure)."""

from __future__ import annotations

import pytest
from browser import find_chromium


@pytest.fixture
def chromium() -> str:
    return find_chromium()
