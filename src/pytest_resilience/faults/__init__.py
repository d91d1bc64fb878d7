"""One module per fault; each registers how to undo itself from a ledger spec on import.

A fresh ``pytest --chaos-cleanup`` process imports none of the fault modules by itself,
so :func:`load_all` imports every one of them before the ledger's entries are reverted;
otherwise an entry would be "left open" only because its reverter was never registered.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

__all__ = ["load_all"]

#: modules of this package that hold no fault (shared machinery, the fixtures' injectors)
_NOT_FAULTS = frozenset({"base", "injectors", "iptables", "proof"})


def load_all() -> list[str]:
    """Import every fault module (registering its reverter); returns those imported.

    One module that fails to import (a missing optional client, say) must not stop the
    others' entries from being reverted: its entries stay open, named as unregistered.
    """
    loaded = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name in _NOT_FAULTS or info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except ImportError:
            logging.getLogger("pytest_resilience.faults").exception(
                "fault module %s could not be imported; its ledger entries stay open", info.name
            )
            continue
        loaded.append(info.name)
    return loaded
