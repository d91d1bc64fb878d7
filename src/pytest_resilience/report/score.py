"""The run's figures: the seed's metrics table, per-strategy figures and the resilience score.

Resilience score (0-100, higher is better), per scenario that ran (skipped ones are left
out; a ``failed`` or ``error`` outcome scores 0, so a broken scenario can never raise the
run's score, whatever its parts say)::

    score = 100 * (0.5 * V + 0.3 * R + 0.2 * A)

    V  SLO verdicts held: held / declared (no SLO declared: 1 if the test passed, else 0);
       an SLO that was never judged (no data) did not hold
    R  recovery speed: 1 if no SLO breached; 0 if it never recovered; else
       max(0, 1 - time_to_recover / recovery budget)   (budget: 300 s unless given)
    A  healed without a human: 1 if healed by the engine or the platform and no page was
       sent (or nothing needed healing); 0 if only the fault's end healed it, it never
       healed, or someone was paged

The run's score is the mean over its scenarios, rounded to 0.1. The weights say what a
review asks first: did users stay within the SLOs, how fast did it come back, and did it
come back by itself.

Metrics, as the seed's table names them:
mean time to respond = mean time to detect (first alert, else first SLO breach, from T0);
mean time to resolve = mean time to recover (last SLO recovery, from T0);
auto-remediation rate = scenarios healed by the engine / scenarios that injected a fault;
pages sent = sum over scenarios; customer-facing downtime = seconds during which an
error-rate SLO was in breach, summed over scenarios.

Baseline runs (``--remediation-baseline``: the same scenario with the engine observing only)
are left out of every figure here: they feed the with/without comparison
(``comparison.py``), and their expected failures are not the run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .impact import breached, error_rate_downtime_s
from .model import ScenarioResult, SLOVerdict

__all__ = [
    "RECOVERY_BUDGET_S",
    "SCORE_FORMULA",
    "RunMetrics",
    "StrategyStats",
    "automated",
    "run_metrics",
    "run_score",
    "scenario_score",
    "strategy_stats",
]

RECOVERY_BUDGET_S = 300.0
WEIGHTS = {"slos_held": 0.5, "recovery_speed": 0.3, "self_healed": 0.2}
SCORE_FORMULA = (
    "score = 100 x (0.5 V + 0.3 R + 0.2 A), averaged over the scenarios that ran. "
    "V: share of SLO verdicts held (no SLO: 1 if the test passed). "
    "R: recovery speed, 1 if no SLO breached, 0 if never recovered, "
    "else max(0, 1 - time to recover / {budget:g} s). "
    "A: 1 if healed by the engine or the platform without a page (or nothing needed healing), "
    "else 0. An SLO with no data did not hold. A failed or errored scenario scores 0; "
    "skipped ones are left out."
)


@dataclass(frozen=True)
class ScenarioScore:
    score: float
    slos_held: float
    recovery_speed: float
    self_healed: float


@dataclass(frozen=True)
class StrategyStats:
    strategy: str
    actions: int
    succeeded: int
    scenarios: int
    healed: int
    mean_time_to_recover_s: float | None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.actions if self.actions else None


@dataclass(frozen=True)
class RunMetrics:
    scenarios: int
    passed: int
    failed: int
    errors: int
    skipped: int
    score: float | None
    mean_time_to_detect_s: float | None
    mean_time_to_mitigate_s: float | None
    mean_time_to_recover_s: float | None
    detected: int
    recovered: int
    not_recovered: int
    with_fault: int
    healed_by_engine: int
    healed_by_platform: int
    healed_by_fault_end: int
    auto_remediation_rate: float | None
    pages_sent: int
    downtime_s: float
    recovery_budget_s: float = RECOVERY_BUDGET_S
    scenario_scores: dict[str, float] = field(default_factory=dict)


def scenario_score(
    result: ScenarioResult, *, recovery_budget_s: float = RECOVERY_BUDGET_S
) -> ScenarioScore | None:
    """The score of one scenario, with its parts; None for a skipped one.

    A failed scenario keeps its parts (what went wrong shows in them) but scores 0: the
    test said the system is not resilient here, and no part may say otherwise.
    """
    if result.outcome == "skipped":
        return None
    if result.outcome == "error":
        return ScenarioScore(0.0, 0.0, 0.0, 0.0)
    verdicts = result.slo_verdicts
    held = (
        sum(_held(v) for v in verdicts) / len(verdicts)
        if verdicts
        else float(result.outcome == "passed")
    )
    figures = result.figures
    hit = breached(result)
    if not hit:
        speed = 1.0
    elif figures.time_to_recover is None:
        speed = 0.0
    else:
        speed = max(0.0, 1.0 - figures.time_to_recover / recovery_budget_s)
    if result.pages_sent:
        healed = 0.0
    elif figures.healed_by in ("engine", "platform"):
        healed = 1.0
    else:
        healed = 0.0 if hit or figures.healed_by == "fault_end" else 1.0
    total = 100.0 * (
        WEIGHTS["slos_held"] * held
        + WEIGHTS["recovery_speed"] * speed
        + WEIGHTS["self_healed"] * healed
    )
    if result.outcome != "passed":
        total = 0.0
    return ScenarioScore(round(total, 1), round(held, 3), round(speed, 3), healed)


def automated(results: Sequence[ScenarioResult]) -> list[ScenarioResult]:
    """The runs with the engine acting: every result but the baselines."""
    return [r for r in results if not r.is_baseline]


def run_score(
    results: Sequence[ScenarioResult], *, recovery_budget_s: float = RECOVERY_BUDGET_S
) -> float | None:
    results = automated(results)
    scores = [
        s.score
        for s in (scenario_score(r, recovery_budget_s=recovery_budget_s) for r in results)
        if s is not None
    ]
    return round(sum(scores) / len(scores), 1) if scores else None


def run_metrics(
    results: Sequence[ScenarioResult], *, recovery_budget_s: float = RECOVERY_BUDGET_S
) -> RunMetrics:
    results = automated(results)
    ran = [r for r in results if r.outcome != "skipped"]
    figures = {r.nodeid: r.figures for r in ran}
    detect = [f.time_to_detect for f in figures.values() if f.time_to_detect is not None]
    mitigate = [f.time_to_mitigate for f in figures.values() if f.time_to_mitigate is not None]
    recover = [f.time_to_recover for f in figures.values() if f.time_to_recover is not None]
    with_fault = [r for r in ran if r.t0 is not None]
    healed = [figures[r.nodeid].healed_by for r in with_fault]
    scores = {
        r.nodeid: s.score
        for r in ran
        if (s := scenario_score(r, recovery_budget_s=recovery_budget_s)) is not None
    }
    return RunMetrics(
        scenarios=len(results),
        passed=sum(r.outcome == "passed" for r in results),
        failed=sum(r.outcome == "failed" for r in results),
        errors=sum(r.outcome == "error" for r in results),
        skipped=sum(r.outcome == "skipped" for r in results),
        score=round(sum(scores.values()) / len(scores), 1) if scores else None,
        mean_time_to_detect_s=_mean(detect),
        mean_time_to_mitigate_s=_mean(mitigate),
        mean_time_to_recover_s=_mean(recover),
        detected=len(detect),
        recovered=len(recover),
        not_recovered=sum(
            1 for r in with_fault if breached(r) and figures[r.nodeid].time_to_recover is None
        ),
        with_fault=len(with_fault),
        healed_by_engine=healed.count("engine"),
        healed_by_platform=healed.count("platform"),
        healed_by_fault_end=healed.count("fault_end"),
        auto_remediation_rate=(
            round(healed.count("engine") / len(with_fault), 4) if with_fault else None
        ),
        pages_sent=sum(r.pages_sent for r in ran),
        downtime_s=round(sum(error_rate_downtime_s(r) for r in ran), 3),
        recovery_budget_s=recovery_budget_s,
        scenario_scores=scores,
    )


def strategy_stats(results: Sequence[ScenarioResult]) -> list[StrategyStats]:
    """Per remediation strategy: how often its actions worked, and recovery where it acted."""
    by_strategy: dict[str, dict[str, list[Any]]] = {}
    for result in automated(results):
        if result.outcome == "skipped":
            continue
        figures = result.figures
        healer = next((a.strategy for a in result.actions if a.succeeded), None)
        seen: set[str] = set()
        for action in result.actions:
            name = action.strategy or action.action or "(unnamed)"
            entry = by_strategy.setdefault(name, {"actions": [], "ttr": [], "healed": []})
            entry["actions"].append(action)
            if name not in seen:
                seen.add(name)
                entry["ttr"].append(figures.time_to_recover)
                entry["healed"].append(figures.healed_by == "engine" and healer == action.strategy)
    return [
        StrategyStats(
            strategy=name,
            actions=len(entry["actions"]),
            succeeded=sum(a.succeeded for a in entry["actions"]),
            scenarios=len(entry["ttr"]),
            healed=sum(entry["healed"]),
            mean_time_to_recover_s=_mean([t for t in entry["ttr"] if t is not None]),
        )
        for name, entry in sorted(by_strategy.items())
    ]


def _held(verdict: SLOVerdict) -> bool:
    """Held and judged: a verdict with no worst value never saw a reading (no data)."""
    return bool(verdict.held) and verdict.worst_value is not None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None
