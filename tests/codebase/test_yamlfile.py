"""The one YAML loader: plain data, and the line of any part of it, from one parse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import pytest_resilience
from pytest_resilience.errors import ConfigError
from pytest_resilience.yamlfile import YamlSyntaxError, load_yaml, parse_yaml

TEXT = """\
name: demo
steps:
  - name: first
    actions: [a, b]
  -
    name: second
labels:
  tier: web
"""


def test_lines_by_path_and_by_container() -> None:
    doc = parse_yaml(TEXT, source="demo.yaml")
    assert doc.data == yaml.safe_load(TEXT)
    assert type(doc.data) is dict and type(doc.data["steps"]) is list  # dumpable as is
    yaml.safe_dump(doc.data)
    assert doc.line_of(["steps", 1, "name"]) == 6
    assert doc.line_of(["steps", 0, "nope"]) == 3  # the nearest parent
    steps = doc.data["steps"]
    # by container: a key's own line, a list item's line, else the container's first line
    assert doc.line_in(doc.data, "labels") == 7
    assert doc.line_in(steps, 1) == 6  # the item starts at its first key, after the "-"
    assert doc.line_in(steps[0]["actions"], 1) == 4
    assert doc.line_in(steps, 9) == 3
    assert doc.line_in(doc.data["labels"]) == 8
    assert doc.line_in({"not": "ours"}, "not") is None
    assert doc.line_in("a string") is None


def test_anchors_and_an_empty_document() -> None:
    doc = parse_yaml("base: &b {x: 1}\nother: *b\n", source="a.yaml")
    assert doc.data["other"] is doc.data["base"]
    assert doc.line_in(doc.data["other"], "x") == 1
    empty = parse_yaml("", source="e.yaml")
    assert empty.data is None and empty.line_of(["x"]) is None


def test_duplicate_key_is_found_with_its_line() -> None:
    doc = parse_yaml("a: 1\nb:\n  - {c: 1}\n  - c: 2\n    c: 3\n", source="d.yaml")
    assert doc.duplicate_key() == (["b", 1, "c"], 5)
    assert parse_yaml(TEXT, source="demo.yaml").duplicate_key() is None


def test_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml(path)
    assert caught.value.source == f"{path}:{caught.value.line}" and caught.value.line
    assert str(caught.value).startswith(f"{path}:{caught.value.line}: not valid YAML: ")
    assert isinstance(caught.value, ConfigError)
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "missing.yaml")


def test_no_other_module_reads_yaml_with_its_own_line_numbers() -> None:
    """yaml.compose and SafeLoader subclasses live in yamlfile.py only (one loader)."""
    package = Path(pytest_resilience.__file__).parent
    own_readers = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "yamlfile.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            loader_class = isinstance(node, ast.ClassDef) and any(
                ast.unparse(base).endswith("Loader") for base in node.bases
            )
            compose = isinstance(node, ast.Attribute) and ast.unparse(node) == "yaml.compose"
            if loader_class or compose:
                own_readers.append(f"{path.relative_to(package)}:{node.lineno}")
    # chaostoolkit/model.py composes JSON text for its lines (not this session's file)
    assert [r for r in own_readers if not r.startswith("chaostoolkit/model.py:")] == []
