"""YAML loading that remembers where each value came from.

Users write scenarios, services and playbooks by hand; an error that says
``scenarios/kill.yaml:14: field 'method[0].args.count'`` gets fixed in seconds, a
traceback from deep inside a dataclass does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["YamlDocument", "load_yaml"]


@dataclass(frozen=True)
class YamlDocument:
    path: Path
    data: Any
    _root: yaml.Node | None

    def line_of(self, field: Sequence[str | int]) -> int | None:
        """1-based line of the value at ``field`` (keys and list indexes), or the nearest parent."""
        node, line = self._root, None
        for part in field:
            if node is None:
                break
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
        return node.start_mark.line + 1 if node is not None else line

    def error(self, message: str, field: Sequence[str | int] = ()) -> ConfigError:
        line = self.line_of(field) if field else None
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(message, source=where, field=dotted(field) if field else None)


def dotted(field: Sequence[str | int]) -> str:
    out = ""
    for part in field:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(path: Path) -> YamlDocument:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", source=where) from None
    return YamlDocument(Path(path), data, root)
