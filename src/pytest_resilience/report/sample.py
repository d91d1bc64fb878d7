"""Synthetic scenarios built through the real Timeline API: for the report's tests, its
benchmark, and previewing the report without a cluster
(``python -m pytest_resilience.report.sample OUT.html``).

Each scenario is one fault under 1 Hz load: steady state, fault at T0, an SLO breach, an
alert, an engine action with its verify step (or a platform restart, or nothing until the
fault ends), recovery, revert.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from .. import timeline as tl
from .model import ScenarioResult, SLOVerdict

__all__ = ["sample_result"]


def sample_result(
    index: int = 0,
    *,
    start: float = 1_700_000_000.0,
    seconds: int = 60,
    fault_at: int = 10,
    healed_by: str = "engine",
    recover_after: int | None = 15,
    outcome: str | None = None,
    pages: int = 0,
    strategy: str = "restart-pod",
    detail: dict[str, object] | None = None,
    seed: int | None = None,
    baseline: bool = False,
) -> ScenarioResult:
    """One scenario; ``healed_by`` is "engine", "platform", "fault_end" or "none".

    ``recover_after`` is seconds from T0 to the SLO's recovery, None for never.
    ``detail`` is added to the fault's event (tests plant secrets there).
    ``baseline``: the ``--remediation-baseline`` twin of scenario ``index`` (the engine only
    observes: its action is decided, not done); its recovery window is 30 s from T0.
    """
    rng = random.Random(index if seed is None else seed)
    timeline = tl.Timeline(f"scenario-{index}", clock=lambda: start)
    t0 = start + fault_at
    breach_at = t0 + 3
    recovered_at = None if recover_after is None else t0 + recover_after
    revert_at = t0 + min(30, seconds - fault_at - 1)
    timeline.mark(tl.STEADY_STATE, "steady", at=start + 1)
    timeline.mark(tl.FAULT_INJECTED, "pod_kill", at=t0, **(detail or {}))
    timeline.mark(tl.POD_DIED, "api-0", at=t0 + 0.2)
    timeline.mark(
        tl.SLO_BREACHED, "error-rate", at=breach_at, objective="error rate <= 1.00% over 5 s"
    )
    timeline.mark(tl.ALERT_FIRED, "HighErrorRate", at=t0 + 4.5)

    def action(*, ok: bool, **outcome: str | bool) -> None:
        ids = {"strategy": strategy, "target": "api-0", "action_id": f"a{index}"}
        timeline.mark(tl.ACTION_STARTED, "restart_pod", at=t0 + 5, **ids, **outcome)
        timeline.mark(tl.ACTION_FINISHED, "restart_pod", at=t0 + 7, ok=ok, **ids, **outcome)

    if baseline:
        timeline.mark(tl.RECOVERY_WINDOW, "", at=t0 + 1, within_s=30.0, since=None)
        action(ok=False, dry_run=True)
        if healed_by == "platform":
            timeline.mark(tl.POD_READY, "api-0", at=t0 + 6)
    elif healed_by == "engine":
        action(ok=True)
        timeline.mark(tl.VERIFIED, "restart_pod", at=t0 + 9, action_id=f"a{index}", ok=True)
        timeline.mark(tl.POD_READY, "api-0", at=t0 + 8)
    elif healed_by == "platform":
        timeline.mark(tl.POD_READY, "api-0", at=t0 + 6)
    elif healed_by == "none":
        action(ok=False, error="pod not found")
    for _ in range(pages):
        timeline.mark(tl.ESCALATED, "page", at=t0 + 10, paged=True)
    if recovered_at is not None:
        timeline.mark(tl.SLO_RECOVERED, "error-rate", at=recovered_at)
    if healed_by != "none":
        timeline.mark(tl.FAULT_REVERTED, "pod_kill", at=revert_at)
    for k in range(seconds):
        at = start + k
        bad = at >= breach_at and (recovered_at is None or at < recovered_at)
        requests = 100 + rng.randint(-5, 5)
        failures = int(requests * (0.2 + 0.1 * rng.random())) if bad else 0
        timeline.record(
            "load",
            {
                "requests": requests,
                "failures": failures,
                "p50": 12 + rng.random() * 3,
                "p95": 40 + rng.random() * 10,
                "p99": (350 if bad else 55) + rng.random() * 20,
                "rps": float(requests),
            },
            at=at,
        )
    held = recover_after is not None and recover_after <= 30
    verdict = SLOVerdict(
        name="error-rate",
        objective="error rate <= 1.00% over 5 s",
        held=held,
        worst_value=0.3,
        worst_at=5.0,
    )
    nodeid = f"tests/test_chaos.py::test_scenario[{index}]"
    return ScenarioResult.from_timeline(
        timeline,
        nodeid=f"{nodeid[:-1]}-baseline]" if baseline else nodeid,
        twin=nodeid if baseline else "",
        mode="baseline" if baseline else "automated",
        expected_failure="SLOViolation: SLO 'error-rate' did not recover" if baseline else "",
        outcome=outcome or ("passed" if held or baseline else "failed"),
        duration_s=float(seconds),
        slo_verdicts=[verdict],
        target="local",
    )


def main(argv: list[str]) -> int:
    from .standalone import write_resilience_report

    out = Path(argv[0] if argv else "resilience-sample.html")
    kinds = ["engine", "engine", "platform", "fault_end", "none"]
    results = [
        sample_result(
            i,
            healed_by=kinds[i % len(kinds)],
            recover_after=None if kinds[i % len(kinds)] == "none" else 12 + i,
        )
        for i in range(10)
    ]
    write_resilience_report(out, results, history_dir=None, run_info={"target": "sample"})
    print(out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
