"""pytest-resilience: chaos scenarios as pytest tests, with SLOs, remediation and MTTR.

The public names live in private rooms and are re-exported here, as pytest and pluggy do.
They are imported on first use (PEP 562 ``__getattr__``), not with the package: pytest
imports this package for every test suite once the plugin is installed, and a suite without
chaos must not pay for the timeline, the faults or the engine. Type checkers read the
``TYPE_CHECKING`` imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Engine
    from .engine.pager import LocalPager
    from .errors import (
        ConfigError,
        FaultError,
        NotAllowed,
        PrivilegeError,
        ResilienceError,
        SelectorMatchedNothing,
        SLOViolation,
        TargetError,
    )
    from .faults.base import ActiveFault
    from .faults.injectors import (
        BadDeployInjector,
        DiskFillInjector,
        LatencyInjector,
        MemoryStressInjector,
        NetworkBlockInjector,
        NodeFailureInjector,
        PodKillInjector,
        ProxyDownInjector,
        ToxicInjector,
    )
    from .load import LoadRun
    from .load_starter import LoadStarter
    from .monitoring import Monitoring
    from .slo import SLOMonitor
    from .targets.base import Pod, Target
    from .timeline import Event, Figures, Sample, Timeline

__all__ = [
    "ActiveFault",
    "BadDeployInjector",
    "ConfigError",
    "DiskFillInjector",
    "Engine",
    "Event",
    "FaultError",
    "Figures",
    "LatencyInjector",
    "LoadRun",
    "LoadStarter",
    "LocalPager",
    "MemoryStressInjector",
    "Monitoring",
    "NetworkBlockInjector",
    "NodeFailureInjector",
    "NotAllowed",
    "Pod",
    "PodKillInjector",
    "PrivilegeError",
    "ProxyDownInjector",
    "ResilienceError",
    "SLOMonitor",
    "SLOViolation",
    "Sample",
    "SelectorMatchedNothing",
    "Target",
    "TargetError",
    "Timeline",
    "ToxicInjector",
]

#: public name -> the module (relative to this package) that defines it
_HOMES = {
    "ActiveFault": ".faults.base",
    "BadDeployInjector": ".faults.injectors",
    "ConfigError": ".errors",
    "DiskFillInjector": ".faults.injectors",
    "Engine": ".engine",
    "Event": ".timeline",
    "FaultError": ".errors",
    "Figures": ".timeline",
    "LatencyInjector": ".faults.injectors",
    "LoadRun": ".load",
    "LoadStarter": ".load_starter",
    "LocalPager": ".engine.pager",
    "MemoryStressInjector": ".faults.injectors",
    "Monitoring": ".monitoring",
    "NetworkBlockInjector": ".faults.injectors",
    "NodeFailureInjector": ".faults.injectors",
    "NotAllowed": ".errors",
    "Pod": ".targets.base",
    "PodKillInjector": ".faults.injectors",
    "PrivilegeError": ".errors",
    "ProxyDownInjector": ".faults.injectors",
    "ResilienceError": ".errors",
    "SLOMonitor": ".slo",
    "SLOViolation": ".errors",
    "Sample": ".timeline",
    "SelectorMatchedNothing": ".errors",
    "Target": ".targets.base",
    "TargetError": ".errors",
    "Timeline": ".timeline",
    "ToxicInjector": ".faults.injectors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # imported once: the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
