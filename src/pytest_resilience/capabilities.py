"""Which scenarios the chosen target can run, decided at collection.

A capability (:data:`~.targets.base.CAPABILITIES`) is a small protocol a target class
implements or not, so this is known before the target starts: a scenario that needs one its
target lacks is skipped with the capability named, instead of failing halfway with an
AttributeError, and ``pytest --collect-only`` shows what runs where. A scenario needs:

- what its ``@pytest.mark.chaos(requires=[...])`` names;
- what the fault fixtures it requests need (:data:`FIXTURE_NEEDS`), and for a YAML
  scenario, the faults of its method (and ``autoscaling`` for an ``autoscaler:``).

A target class may also lack a capability for this run only, by its settings
(:class:`~.targets.base.ConfiguredCapabilities`: Kubernetes without ``--toxiproxy-url``).

Unknown capability names are a usage error naming the scenario and the known names.

The capability protocols (targets/base.py) are imported by the functions that read them: a
suite of plain tests runs ``required`` on every item and must not pay for the seam's import.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

__all__ = [
    "FIXTURE_NEEDS",
    "faults_used",
    "missing",
    "offered",
    "required",
    "skip_lacking",
    "target_class",
]

#: fault fixture -> the capabilities it cannot work without
FIXTURE_NEEDS: dict[str, tuple[str, ...]] = {
    "bad_deploy": ("releases",),
    "latency": ("dependency_proxies",),
    "toxic": ("dependency_proxies",),
    "proxy_down": ("dependency_proxies",),
}


def target_class(kind: str) -> type:
    """The class behind ``--chaos-target`` (imported only for the kind asked for)."""
    if kind == "kubernetes":
        from .targets.kubernetes import KubernetesTarget

        return KubernetesTarget
    from .targets.local import LocalTarget

    return LocalTarget


def offered(cls: type) -> frozenset[str]:
    """The capability names a target class implements."""
    from .targets.base import CAPABILITIES

    return frozenset(name for name, protocol in CAPABILITIES.items() if issubclass(cls, protocol))


def required(item: pytest.Item) -> list[str]:
    """The capabilities ``item`` needs, in the order first named; UsageError on a typo."""
    needs: list[str] = []
    for mark in item.iter_markers("chaos"):  # a chaos suite: the seam is loaded anyway
        from .targets.base import CAPABILITIES

        asked = mark.kwargs.get("requires", ())
        names: Sequence[object] = [asked] if isinstance(asked, str) else list(asked)
        for name in names:
            if name not in CAPABILITIES:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.chaos(requires=...) names unknown capability "
                    f"{name!r}; known: {', '.join(sorted(CAPABILITIES))}"
                )
            needs.append(str(name))
    for fixture in faults_used(item):
        needs.extend(FIXTURE_NEEDS.get(fixture, ()))
    collect = sys.modules.get(f"{__package__}.collect")
    if collect is not None and isinstance(item, collect.ScenarioItem) and item.scenario.autoscaler:
        needs.append("autoscaling")  # a YAML scenario's ``autoscaler:`` (an HPA manifest)
    return list(dict.fromkeys(needs))


def missing(cls: type, settings: Any = None) -> dict[str, str]:
    """Capability name -> why a target of ``cls`` configured by ``settings`` lacks it."""
    from .targets.base import CAPABILITIES, ConfiguredCapabilities

    gone = {name: _summary(name) for name in CAPABILITIES if name not in offered(cls)}
    if settings is not None and issubclass(cls, ConfiguredCapabilities):
        gone.update(cls.capabilities_missing(settings))
    return gone


def skip_lacking(items: Iterable[pytest.Item], settings: Any) -> list[tuple[pytest.Item, str]]:
    """Mark every item needing a capability the target of ``settings`` (a ChaosSettings:
    ``target`` and the options that configure it) lacks as skipped; returns them with the
    reason, which names the capability and why it is missing."""
    target = settings.target
    needing = [(item, needs) for item in items if (needs := required(item))]
    if not needing:  # no scenario here: the target class is not even imported
        return []
    gone = missing(target_class(target), settings)
    skipped: list[tuple[pytest.Item, str]] = []
    for item, needs in needing:
        lacking = [name for name in needs if name in gone]
        if not lacking:
            continue
        what = "; ".join(f"{name!r}: {gone[name]}" for name in lacking)
        reason = f"target {target!r} lacks the capability {what}"
        item.add_marker(pytest.mark.skip(reason=reason))
        skipped.append((item, reason))
    return skipped


def faults_used(item: pytest.Item) -> list[str]:
    """Fixture names of the item, plus the faults a YAML scenario's method injects."""
    if not isinstance(item, pytest.Function):
        return []
    names = list(item.fixturenames)
    # A ScenarioItem exists only once collect.py was imported (for a YAML file): a suite
    # of plain tests does not pay for importing it here.
    collect = sys.modules.get(f"{__package__}.collect")
    if collect is not None and isinstance(item, collect.ScenarioItem):
        names.extend(step.fault for step in item.scenario.method)
    return names


def _summary(name: str) -> str:
    from .targets.base import CAPABILITIES

    doc = (CAPABILITIES[name].__doc__ or name).strip()
    return doc.splitlines()[0].rstrip(".")
