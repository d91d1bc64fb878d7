"""The action registry: names playbooks call, mapped to the functions that do the work.

Apart from :mod:`.actions` so that every module of actions (the built-in ones there,
:mod:`.datastores`, a team's own) registers through it without importing the others: the
built-in modules are imported by :mod:`.actions`, and none of them imports it back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CHECKS", "REGISTRY", "ActionFn", "action", "check_params"]

#: ``fn(ctx, **params)`` returning a short detail for the record (or None)
ActionFn = Callable[..., str | None]
REGISTRY: dict[str, ActionFn] = {}
#: action name -> its option check (``check=`` of :func:`action`)
CHECKS: dict[str, Callable[..., object]] = {}


def action(
    name: str, *, check: Callable[..., object] | None = None
) -> Callable[[ActionFn], ActionFn]:
    """Register ``fn(ctx, **params)`` under ``name`` for playbooks to call."""

    def register(fn: ActionFn) -> ActionFn:
        REGISTRY[name] = fn
        if check is not None:
            CHECKS[name] = check
        else:
            CHECKS.pop(name, None)
        return fn

    return register


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise TypeError (unknown/missing option) or ValueError (bad value) for ``params``."""
    bound = inspect.signature(REGISTRY[name]).bind(None, **params)
    check = CHECKS.get(name)
    if check is not None:
        bound.apply_defaults()
        ctx_name = next(iter(bound.arguments))
        check(**{k: v for k, v in bound.arguments.items() if k != ctx_name})
