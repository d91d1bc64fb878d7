"""Steady-state tolerances, judged as chaoslib's ``hypothesis.within_tolerance`` does.

Every form the Chaos Toolkit documents: ``true``/``false``, a number (an HTTP or process
result is judged by its ``status``), a string, a list of accepted values (two values are
a ``[low, high]`` range unless the result has a ``status``), and the objects ``range``,
``regex``, ``jsonpath`` (``expect``, ``count``, ``target``) and ``probe``.

JSONPath: chaoslib uses ``jsonpath2``, whose filter ``[?(...)]`` tests the node it follows
(``$.foo.*[?(@.baz)].baz``, straight from the Chaos Toolkit docs), and whose ``.*`` walks
into lists. jsonpath-ng (installed here; jsonpath2 pins an old antlr runtime) filters the
children instead and does not walk lists with ``.*``, so those two steps are evaluated
here and the rest of the path by jsonpath-ng: the same documents match the same values.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from ..errors import ConfigError

__all__ = ["check_jsonpath", "jsonpath_values", "within_tolerance"]

log = logging.getLogger("pytest_resilience.chaostoolkit")

#: runs a tolerance of type "probe" with the probed value; returns its output
ProbeRunner = Callable[[dict[str, Any], Any], Any]


def within_tolerance(tolerance: Any, value: object, *, run_probe: ProbeRunner) -> bool:
    """Whether the probe's output ``value`` is within ``tolerance`` (already substituted)."""
    if isinstance(tolerance, bool):  # before int: True is an int in Python, not in JSON
        return value == tolerance
    if isinstance(tolerance, str):
        return value == tolerance
    if isinstance(tolerance, int | float):
        if isinstance(value, dict) and "status" in value:
            status: object = value["status"]
            return status == tolerance
        return value == tolerance
    if isinstance(tolerance, list):
        if isinstance(value, dict) and "status" in value:
            return value["status"] in tolerance
        if len(tolerance) == 2:
            try:
                return cast(bool, tolerance[0] <= value <= tolerance[1])  # numbers, strings: a bool
            except TypeError:
                return False
        return value in tolerance
    if isinstance(tolerance, dict):
        return _within_object(tolerance, value, run_probe)
    return False


def _within_object(tolerance: dict[str, Any], value: Any, run_probe: ProbeRunner) -> bool:
    kind = tolerance.get("type")
    if kind == "probe":
        return bool(run_probe(tolerance, value))
    target = tolerance.get("target")
    if target and isinstance(value, dict):
        value = value.get(target, value)
    if kind == "regex":
        if not isinstance(value, str):
            value = "" if value is None else str(value)
        return re.search(tolerance["pattern"], value) is not None
    if kind == "range":
        try:
            number = Decimal(str(value)) if not isinstance(value, Decimal) else value
            low, high = (Decimal(str(b)) for b in tolerance["range"])
        except (InvalidOperation, ValueError):
            log.debug("range tolerance expects a number, got %r", value)
            return False
        return low <= number <= high
    if kind == "jsonpath":
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        values = jsonpath_values(tolerance["path"], value)
        result = len(values) > 0
        count = tolerance.get("count")
        if count is not None:
            result = len(values) == count
        if "expect" in tolerance:
            expect = tolerance["expect"]
            result = values == (expect if isinstance(expect, list) else [expect])
        if not result:
            log.debug("jsonpath %s found %r", tolerance["path"], values)
        return result
    return False


def check_jsonpath(path: str) -> str | None:
    """Why ``path`` is not a usable JSONPath, or None."""
    if not path.strip():
        return "hypothesis probe tolerance JSON path cannot be empty"
    try:
        _parser()
    except ConfigError as exc:
        return exc.message
    try:
        _steps(path.strip())
    except Exception as exc:  # jsonpath-ng raises its own lexer/parser errors
        return f"hypothesis probe tolerance JSON path {path!r} is invalid: {exc}"
    return None


def jsonpath_values(path: str, document: Any) -> list[Any]:
    """Values matched by ``path`` with jsonpath2's semantics (see the module docstring)."""
    nodes = [document]
    for kind, _text, compiled in _steps(path.strip()):
        if kind == "path":
            nodes = [m.value for node in nodes for m in compiled.find(node)]
        elif kind == "wildcard":
            nodes = [
                child
                for node in nodes
                for child in (
                    node
                    if isinstance(node, list)
                    else node.values()
                    if isinstance(node, dict)
                    else ()
                )
            ]
        else:  # a filter tests each node itself: wrap it so jsonpath-ng sees it as the child
            nodes = [node for node in nodes if compiled.find([node])]
    return nodes


def _steps(path: str) -> list[tuple[str, str, Any]]:
    parse = _parser()
    steps: list[tuple[str, str, Any]] = []
    for kind, text in _split(path):
        if kind == "path":
            if text in ("", "$"):
                continue
            expression = text if text.startswith("$") else "$" + text
            steps.append((kind, text, parse(expression)))
        elif kind == "filter":
            # jsonpath2 spells "and"/"or"; jsonpath-ng's ext grammar says "&" and has no "or"
            expression = re.sub(r"\s+and\s+", " & ", text)
            steps.append((kind, text, parse(f"$[{expression}]")))
        else:
            steps.append((kind, text, None))
    return steps


def _split(path: str) -> list[tuple[str, str]]:
    """Cut at ``.*``/``[*]`` and at ``[?(...)]`` (outside quotes); the rest stays jsonpath-ng's."""
    parts: list[tuple[str, str]] = []
    current, i, quote = "", 0, ""
    while i < len(path):
        char = path[i]
        if quote:
            current += char
            quote = "" if char == quote else quote
            i += 1
            continue
        if char in "'\"":
            quote = char
        if path.startswith("[?", i):
            depth, j = 0, i
            while j < len(path):
                if path[j] == "[":
                    depth += 1
                elif path[j] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            parts.append(("path", current))
            parts.append(("filter", path[i + 1 : j]))
            current, i = "", j + 1
            continue
        if path.startswith("[*]", i) or (path.startswith(".*", i) and not current.endswith(".")):
            parts.append(("path", current))
            parts.append(("wildcard", "*"))
            current, i = "", i + (3 if path[i] == "[" else 2)
            continue
        current += char
        i += 1
    parts.append(("path", current))
    return parts


def _parser() -> Callable[[str], Any]:
    try:
        from jsonpath_ng.ext.parser import parse
    except ImportError:
        raise ConfigError(
            "a jsonpath tolerance needs the jsonpath-ng package: pip install jsonpath-ng"
        ) from None
    compile_path: Callable[[str], Any] = parse  # typed in recent jsonpath-ng, Any in old
    return compile_path
