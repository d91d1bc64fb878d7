"""The embedded local target: services from a YAML file run as supervised local processes.

:class:`LocalTarget` (``target.py``) is the whole public surface; the rest of the package is
its inside, one module per seam (see each module's docstring). ``LocalTarget`` is imported
on first use, so a helper module (``volumes``, ``cgroups``) costs only itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .target import LocalTarget

__all__ = ["LocalTarget"]


def __getattr__(name: str) -> Any:
    if name == "LocalTarget":
        from .target import LocalTarget

        return LocalTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
