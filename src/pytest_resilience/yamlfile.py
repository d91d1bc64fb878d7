"""YAML loading that remembers where each value came from.

Users write scenarios, services and playbooks by hand; an error that says
``scenarios/kill.yaml:14: field 'method[0].args.count'`` gets fixed in seconds, a
traceback from deep inside a dataclass does not. Scenarios, Chaos Toolkit experiments,
the local target's services and the engine's playbooks all read their files here.

The text is parsed once: PyYAML composes the node tree (which carries the marks) and the
plain ``dict``/``list`` data is constructed from it, each container remembered with its
node. A checker asks for a line either by the path of a value (:meth:`YamlDocument.line_of`)
or, holding a mapping or list of the data, by one of its keys (:meth:`YamlDocument.line_in`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["YamlDocument", "YamlSyntaxError", "dotted", "load_yaml", "parse_yaml"]


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all; ``problem`` is PyYAML's own words, ``line`` 1-based."""

    def __init__(self, problem: str, *, source: str, line: int | None) -> None:
        self.problem = problem
        super().__init__(
            f"not valid YAML: {problem}",
            source=f"{source}:{line}" if line else source,
            line=line,
        )


@dataclass(frozen=True)
class YamlDocument:
    """The data of one YAML file (plain dicts and lists) and where each part of it was."""

    path: Path
    data: Any
    _root: yaml.Node | None
    #: id of each dict/list in ``data`` -> the node it was built from
    _nodes: Mapping[int, yaml.Node] = field(default_factory=dict, repr=False)

    def line_of(self, field: Sequence[str | int]) -> int | None:
        """1-based line of the value at ``field`` (keys and list indexes), or the nearest parent."""
        node, line = self._root, None
        for part in field:
            if node is None:
                break
            line = node.start_mark.line + 1
            node = _child(node, part)
        return node.start_mark.line + 1 if node is not None else line

    def line_in(self, container: object, key: str | int | None = None) -> int | None:
        """1-based line of ``key`` in ``container`` (a dict or list of :attr:`data`).

        A mapping's key gives the line of the key itself, a list's index that of the item;
        no key, or one not there, gives the container's own first line. None for anything
        that is not a container of this document.
        """
        node = self._nodes.get(id(container))
        if node is None:
            return None
        if isinstance(node, yaml.MappingNode) and isinstance(key, str):
            for k, _ in node.value:
                if str(k.value) == key:
                    return int(k.start_mark.line) + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key >= 0:
            item = node.value[key] if key < len(node.value) else node
            return int(item.start_mark.line) + 1
        return int(node.start_mark.line) + 1

    def duplicate_key(self) -> tuple[list[str | int], int] | None:
        """The path and line of the first key given twice in one mapping, if any.

        PyYAML silently keeps the last of two equal keys; a checker that wants a repeated
        key reported as the typo it almost always is asks here.
        """
        return _duplicate(self._root, [])

    def error(self, message: str, field: Sequence[str | int] = ()) -> ConfigError:
        line = self.line_of(field) if field else None
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(message, source=where, field=dotted(field) if field else None, line=line)


def dotted(field: Sequence[str | int]) -> str:
    """``["services", 2, "replicas"]`` -> ``services[2].replicas``."""
    out = ""
    for part in field:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse ``path``; ConfigError (unreadable) or YamlSyntaxError naming it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from None
    return parse_yaml(text, source=path)


def parse_yaml(text: str, *, source: str | Path) -> YamlDocument:
    """Parse ``text`` (named ``source`` in errors) into a :class:`YamlDocument`."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlSyntaxError(
            exc.problem or str(exc),
            source=str(source),
            line=int(mark.line) + 1 if mark is not None else None,
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), source=str(source), line=None) from None
    finally:
        loader.dispose()
    return YamlDocument(Path(source), data, root, loader.nodes)


class _Loader(yaml.SafeLoader):
    """The safe loader, noting which node each dict and list was built from."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.nodes: dict[int, yaml.Node] = {}

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        data = super().construct_object(node, deep)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            self.nodes.setdefault(id(data), node)
        return data


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return node.value[part] if 0 <= part < len(node.value) else None
    return None


def _duplicate(node: yaml.Node | None, path: list[str | int]) -> tuple[list[str | int], int] | None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                return [*path, key.value], int(key.start_mark.line) + 1
            seen.add(key.value)
            found = _duplicate(value, [*path, key.value])
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate(item, [*path, i])
            if found:
                return found
    return None
