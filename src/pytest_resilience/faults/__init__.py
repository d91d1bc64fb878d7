"""One module per fault; each registers how to undo itself from a ledger spec on import.

A fresh ``pytest --chaos-cleanup`` process imports none of the fault modules by itself,
so :func:`load_all` imports every one of them before the ledger's entries are reverted;
otherwise an entry would be "left open" only because its reverter was never registered.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["load_all"]

#: modules of this package that hold no fault (shared machinery)
_NOT_FAULTS = frozenset({"base", "iptables"})


def load_all() -> list[str]:
    """Import every fault module (registering its reverter); returns their names."""
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if info.name not in _NOT_FAULTS and not info.name.startswith("_")
    )
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names
