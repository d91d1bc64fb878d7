"""pytest glue only: options, markers, fixtures and hooks. Logic lives in the rooms."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: a chaos scenario (fault under load, SLO checks)")
