"""A bad release under load, the engine watching: it rolls back, or (baseline) would have.

Not named test_*.py: only tests/plugin/test_remediation_baseline_e2e.py collects it, by path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@pytest.mark.chaos(requires=["releases"])
def test_bad_release_rolled_back(load, slo, bad_deploy, remediation_engine):
    slo.error_rate(below=0.01, window_s=2)
    with load(users=4, spawn_rate=4, locustfile=LOCUSTFILE) as run:
        run.wait_for_samples(3, timeout=30)
        slo.assert_holds()
        bad_deploy("web", version="v2")
        remediation_engine.wait_for_action("High Error Rate", action="rollback", timeout=20)
        remediation_engine.wait_settled(timeout=30)
        remediation_engine.assert_strategy_ran("High Error Rate", actions=["rollback"])
        slo.assert_recovers(within_s=12)
    remediation_engine.assert_no_page()
