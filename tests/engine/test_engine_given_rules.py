"""A rule the engine is given replaces the playbooks' rule for the same alert, whatever its
target: the plugin gives the bundled rules for ``--chaos-entry``, and a project whose entry
is not ``api`` must not also get the bundled ``target: api`` rule, which would raise alerts
(and act, then page) about a workload that project does not have."""

from __future__ import annotations

from engine_support import SLEEP, ProcTarget

from pytest_resilience.engine import BUNDLED_PLAYBOOKS, Engine
from pytest_resilience.engine.alerts import Rule


def test_a_given_rule_replaces_the_bundled_one_for_another_target(tmp_path):
    target = ProcTarget({"web": (1, {"v1": SLEEP}, "v1")})
    try:
        given = Rule("ErrorRateHighCritical", "error_rate", "above", 0.02, "web", for_s=1.0)
        engine = Engine(
            target,
            playbooks_dir=[BUNDLED_PLAYBOOKS],
            store_path=tmp_path / "e.db",
            probes={"error_rate": lambda: 0.0},
            rules=[given],
            dry_run=True,
        )
        try:
            evaluated = [(r.alert, r.target) for r in engine.rules.rules]
        finally:
            engine.close()
    finally:
        target.close()
    assert evaluated == [("ErrorRateHighCritical", "web")]
