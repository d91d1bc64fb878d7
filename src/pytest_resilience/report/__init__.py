"""Resilience reports: pytest-html extras per chaos test, the standalone report, JUnit
properties and console lines. Everything rendered passes through :func:`redact`.

Heavy imports (matplotlib, jinja2) happen when a report is rendered, not at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..redaction import redact, redact_text, register_secret, register_secrets
from .journal import ExperimentJournal, JournalRun
from .model import ReportedAction, ScenarioResult, SLOVerdict

if TYPE_CHECKING:
    from .console import phase_line, terminal_summary_lines
    from .html_extras import html_extras
    from .junit import junit_properties
    from .standalone import write_resilience_report

__all__ = [
    "ExperimentJournal",
    "JournalRun",
    "ReportedAction",
    "SLOVerdict",
    "ScenarioResult",
    "html_extras",
    "junit_properties",
    "phase_line",
    "redact",
    "redact_text",
    "register_secret",
    "register_secrets",
    "terminal_summary_lines",
    "write_resilience_report",
]

_LAZY = {
    "html_extras": ".html_extras",
    "junit_properties": ".junit",
    "phase_line": ".console",
    "terminal_summary_lines": ".console",
    "write_resilience_report": ".standalone",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
