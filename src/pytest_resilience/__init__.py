"""pytest-resilience: chaos scenarios as pytest tests, with SLOs, remediation and MTTR."""

from __future__ import annotations

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
from .timeline import Event, Figures, Sample, Timeline

__all__ = [
    "ConfigError",
    "Event",
    "FaultError",
    "Figures",
    "NotAllowed",
    "PrivilegeError",
    "ResilienceError",
    "SLOViolation",
    "Sample",
    "SelectorMatchedNothing",
    "TargetError",
    "Timeline",
]
