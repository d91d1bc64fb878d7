"""``--remediation-baseline``: every scenario that uses the engine also runs without it.

The question a review asks of auto-remediation is "how much faster does the system heal
because of the engine?". Only the same fault, on the same system, with and without the
engine acting, answers it. So each chaos item that uses the engine gets a twin, collected
right after it with ``[baseline]`` in its name (``test_x[baseline]``, ``test_x[a-baseline]``)
that runs the same body with:

- the engine in dry run: it detects, decides and records what it would have done
  (``dry_run`` actions and incidents), but acts on nothing;
- no escalation channel: nobody is paged. (``Engine(dry_run=True)`` alone still queues a
  page when an escalation happens and it has a channel, so the baseline gives it none.)
- a fresh target: the automated twin's faults are reverted (its ledger entries closed),
  and each workload is back at the replicas and version it had when the twin started
  (restored, and waited ready, if the twin's engine left it scaled or rolled);
- the engine's assertions relaxed to what a dry run can show: ``assert_strategy_ran``
  accepts the step it would have run whatever its outcome, ``assert_no_page`` has nothing
  to check (see :class:`ObservingEngine`).

Without automation the scenario is expected to fail its recovery: an ``AssertionError``
(``SLOViolation`` included) raised after T0 is recorded on the timeline as
``baseline_expected`` and the baseline item **passes**: the censored figure ("not recovered
within N s") is the finding, not a defect. One raised before T0 (the steady state did not
hold) or any other exception fails the item as usual: nothing was measured.

The comparison itself (means, censoring, reduction) is arithmetic over the two timelines:
``report/comparison.py``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest

from .errors import ResilienceError
from .ledger import Ledger
from .slo import Objective, SLOMonitor
from .targets.base import Releases, Target
from .timeline import BASELINE_EXPECTED, RECOVERY_WINDOW, Timeline

__all__ = [
    "AUTOMATED",
    "BASELINE",
    "ObservingEngine",
    "WindowedSLOMonitor",
    "add_baselines",
    "baseline_name",
    "expected_without_automation",
    "make_fresh",
    "snapshot",
    "uses_engine",
]

BASELINE = "baseline"
AUTOMATED = "automated"
#: on a baseline item: the nodeid of its automated twin
TWIN_OF = pytest.StashKey[str]()
#: on an automated item that has a baseline: the baseline's nodeid
BASELINE_OF = pytest.StashKey[str]()
_MESSAGE_LIMIT = 500


def uses_engine(item: pytest.Item) -> bool:
    """Whether the item runs the remediation engine: it requests ``remediation_engine``,
    or it is a YAML scenario with ``remediation: true`` (which requests it at run time)."""
    if "remediation_engine" in getattr(item, "fixturenames", ()):
        return True
    return bool(getattr(getattr(item, "scenario", None), "remediation", False))


def baseline_name(name: str) -> str:
    """``test_x`` -> ``test_x[baseline]``; ``test_x[a]`` -> ``test_x[a-baseline]``."""
    if name.endswith("]") and "[" in name:
        return f"{name[:-1]}-{BASELINE}]"
    return f"{name}[{BASELINE}]"


def add_baselines(items: list[pytest.Item]) -> list[pytest.Item]:
    """``items`` with each engine item's baseline twin right after it (returns the twins)."""
    out: list[pytest.Item] = []
    added: list[pytest.Item] = []
    for item in items:
        out.append(item)
        if isinstance(item, pytest.Function) and uses_engine(item) and TWIN_OF not in item.stash:
            twin = _duplicate(item)
            item.stash[BASELINE_OF] = twin.nodeid
            twin.stash[TWIN_OF] = item.nodeid
            out.append(twin)
            added.append(twin)
    items[:] = out
    return added


def _duplicate(item: pytest.Function) -> pytest.Function:
    """The same test function, fixtures, parameters and markers, under the baseline name."""
    # A custom item (YAML scenario, experiment) carries its body as callobj; a module or
    # class function is looked up by name, by pytest or by _body (a class test gets its own
    # instance).
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        # pytest >= 9.2 builds a parametrized item's nodeid from originalname and callspec.id
        # (older ones from name): the id gets the baseline suffix too, so both agree.
        callspec = dataclasses.replace(callspec, _idlist=[*callspec._idlist, BASELINE])
        body: dict[str, Any] = {"originalname": item.originalname}
    else:
        # Without a callspec pytest >= 9.2 names the node after originalname when given, so
        # none is given and the body is passed instead of looked up by that name.
        body = {"callobj": _body(item)}
    if not isinstance(item.parent, pytest.Module | pytest.Class):
        body["callobj"] = item.obj
    twin = type(item).from_parent(
        item.parent,
        name=baseline_name(item.name),
        callspec=callspec,
        # the same closure, with the pseudo-fixtures that direct parametrization made
        fixtureinfo=item._fixtureinfo,
        **body,
    )
    twin.originalname = item.originalname
    for attribute in ("scenario", "experiment"):  # what collect.py hangs on its items
        if hasattr(item, attribute):
            setattr(twin, attribute, getattr(item, attribute))
    twin.own_markers[:] = list(item.own_markers)
    twin.keywords.update({m.name: m for m in item.own_markers})
    twin.extra_keyword_matches.update(item.extra_keyword_matches)
    twin.extra_keyword_matches.add(BASELINE)
    return twin


def _body(item: pytest.Function) -> Any:
    """The test function of ``item`` as pytest would look it up (a class test on a fresh
    instance of its class, as each test gets one)."""
    if isinstance(item.parent, pytest.Class):
        return getattr(item.parent.obj(), item.originalname)  # what Class.newinstance does
    if isinstance(item.parent, pytest.Module):
        return getattr(item.parent.obj, item.originalname)
    return item.obj


class ObservingEngine:
    """The baseline's engine: a dry-run :class:`~pytest_resilience.engine.runner.Engine`
    whose scenario assertions say what it would have done, not what it did.

    Every attribute is the engine's own (``probes``, ``incidents()``, ``wait_for_action``:
    a dry-run action counts as finished). Two differ: ``assert_strategy_ran`` accepts any
    outcome of the step (a dry run ends every step ``dry_run``), and ``assert_no_page``
    checks nothing (the baseline has no pager; without automation, every alert pages).
    The step's actions must still match: a step the dry run never reached fails as it
    would, and after T0 that is the expected outcome without automation.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def assert_strategy_ran(
        self, name: str, *, actions: Sequence[str] | None = None, outcome: str | None = "fixed"
    ) -> Any:
        return self._engine.assert_strategy_ran(name, actions=actions, outcome=None)

    def assert_no_page(self) -> None:
        return None


class WindowedSLOMonitor(SLOMonitor):
    """The SLO monitor, which also marks each recovery window on the timeline.

    ``assert_recovers(within_s=...)`` is where a scenario states how long recovery may take;
    the comparison needs that bound (a baseline that never recovers is censored at it), and
    the timeline is the only thing the report reads.
    """

    def assert_recovers(
        self,
        *objectives: Objective | str,
        within_s: float,
        since: float | None = None,
        stable_s: float | None = None,
    ) -> float:
        self.timeline.mark(RECOVERY_WINDOW, "", within_s=float(within_s), since=since)
        return super().assert_recovers(
            *objectives, within_s=within_s, since=since, stable_s=stable_s
        )


def expected_without_automation(exc: BaseException, timeline: Timeline | None) -> str | None:
    """The reason to record if ``exc`` is what a baseline run is expected to raise, else None.

    Expected: an ``AssertionError`` after T0 (an SLO did not recover, the fix never came).
    Not expected: anything before the fault (the steady state did not hold: nothing was
    measured), and every other exception (a fault that could not be injected, a crash).
    """
    if not isinstance(exc, AssertionError) or timeline is None or timeline.t0 is None:
        return None
    from .redaction import redact_text

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = redact_text(f"{type(exc).__name__}: {text}")[:_MESSAGE_LIMIT]
    timeline.mark(BASELINE_EXPECTED, type(exc).__name__, reason=reason)
    return reason


def snapshot(target: Target) -> dict[str, tuple[int, str]]:
    """Each workload's replicas and version: what the baseline is put back to."""
    return {w.name: (w.replicas, w.version) for w in target.workloads()}


def make_fresh(
    target: Target,
    ledger: Ledger,
    before: dict[str, tuple[int, str]] | None,
    *,
    timeout: float = 60.0,
) -> list[str]:
    """Bring the target back to the state the automated twin started from; say what changed.

    Raises ResilienceError, naming what is not fresh, when the twin left a fault of this
    session open in the ledger (its revert failed) or a workload does not become ready.
    """
    left_open = [
        e for e in ledger.open_entries(include_live_owners=True) if e.session == ledger.session
    ]
    if left_open:
        names = ", ".join(f"#{e.id} {e.kind} ({e.description})" for e in left_open)
        raise ResilienceError(
            f"baseline needs a fresh target, but this session's ledger still holds {names} "
            "open: the automated run's revert did not complete (see its teardown)"
        )
    restored: list[str] = []
    for workload in target.workloads():
        replicas, version = (before or {}).get(workload.name, (workload.replicas, workload.version))
        if version and workload.version != version and isinstance(target, Releases):
            target.rollout(workload.name, version)
            restored.append(f"{workload.name} rolled out {version} (was {workload.version})")
        if workload.replicas != replicas:
            target.scale(workload.name, replicas)
            restored.append(f"{workload.name} scaled to {replicas} (was {workload.replicas})")
    deadline = time.monotonic() + timeout
    for workload in target.workloads():
        remaining = max(1.0, deadline - time.monotonic())
        try:
            target.wait_ready(workload.name, timeout=remaining, replicas=workload.replicas)
        except ResilienceError as exc:
            raise ResilienceError(
                f"baseline needs a fresh target, but workload {workload.name!r} did not "
                f"become ready: {exc}"
            ) from None
    return restored
