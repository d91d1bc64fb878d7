"""A chaos test's pytest report through the secret filter (redaction.py), before pytest-html
or JUnit write it: a DSN in an assertion message is still a secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

__all__ = ["redact_report"]


def redact_report(report: pytest.TestReport) -> None:
    """Redact the failure text, the captured output sections and the user properties."""
    from .redaction import redact, redact_text

    if report.longrepr is not None:
        text = str(report.longrepr)
        cleaned = redact_text(text)
        if cleaned != text:  # a traceback object stays one, for the reporters that use it
            report.longrepr = cleaned
    report.sections = [(title, redact_text(body)) for title, body in report.sections]
    report.user_properties = [(name, redact(value)) for name, value in report.user_properties]
