"""A failed chaos test's reason in one line: ``test.py:12: SelectorMatchedNothing: ...``.

A :class:`~.errors.ResilienceError` already names the file, field or value at fault and
what to do; the plugin's and the faults' frames under it would only bury that line. So,
unless the user asked for a traceback (``--tb`` other than auto, ``--full-trace``), the
report shows the line of the test that raised it, then the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ResilienceError

if TYPE_CHECKING:
    import pytest

__all__ = ["shorten_failure"]


def shorten_failure(
    report: pytest.TestReport, item: pytest.Item, call: pytest.CallInfo[None]
) -> None:
    """Replace a ResilienceError's traceback in ``report`` by its one line."""
    if (
        report.failed
        and call.excinfo is not None
        and isinstance(call.excinfo.value, ResilienceError)
        and item.config.getoption("tbstyle", "auto") == "auto"
        and not item.config.getoption("fulltrace", False)
    ):
        report.longrepr = short_failure(item, call.excinfo)


def short_failure(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The line of ``item``'s own file nearest the raise (none if no frame is there), then
    the exception's type and message."""
    where = ""
    for entry in reversed(excinfo.traceback):
        if Path(entry.path) == item.path:
            where = f"{entry.path}:{entry.lineno + 1}: "
            break
    return f"{where}{type(excinfo.value).__name__}: {excinfo.value}"
