"""The house style holds on every commit: ruff's lint and format, as configured in pyproject."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff") or pytest.fail(
        "ruff is in the [test] extra: pip install -e '.[test]'"
    )
    done = subprocess.run([ruff, *command, "."], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


_XREF = re.compile(r":(?:mod|class|func|meth|data|attr):`~?(\.+[\w.]+)`")


def _resolves(module: str, is_package: bool, ref: str) -> bool:
    """A relative cross-reference as the docstrings write it, ``..targets.base.Pod`` from a
    module of ``faults``: one dot is the module's own package, each more goes up one."""
    dots = len(ref) - len(ref.lstrip("."))
    package = module.split(".") if is_package else module.split(".")[:-1]
    parts = [*package[: len(package) - (dots - 1)], *ref.lstrip(".").split(".")]
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            found: object = importlib.import_module(name)
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                found = getattr(found, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_the_docstrings_cross_references_name_what_exists() -> None:
    """A module moved into a package leaves ``:mod:`.base``` pointing at nothing; a reader
    who follows it finds no such file."""
    src = REPO / "src"
    stale = []
    for path in sorted((src / "pytest_resilience").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        for ref in _XREF.findall(path.read_text()):
            if not _resolves(module, is_package, ref):
                stale.append(f"{path.relative_to(REPO)}: {ref}")
    assert stale == []


MODULE_LINES, CLASS_LINES = 500, 400


def _oversized(source: str, tree: ast.Module) -> list[str]:
    """What makes a module too big to hold in mind: its own length, or one class's."""
    found = []
    if (lines := len(source.splitlines())) > MODULE_LINES:
        found.append(f"{lines} lines")
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef) or node.end_lineno is None:
            continue
        if (size := node.end_lineno - node.lineno + 1) > CLASS_LINES:
            found.append(f"class {node.name} {size} lines")
    return found


def test_a_module_over_the_size_bounds_says_why_in_its_docstring() -> None:
    """Issue 14's bounds (500 lines a module, 400 a class) bend only with a reason the next
    reader sees first: a ``Size:`` line in the module docstring."""
    unexplained = []
    for path in sorted((REPO / "src").rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        if not (found := _oversized(source, tree)):
            continue
        if not re.search(r"^Size: \S", ast.get_docstring(tree) or "", re.MULTILINE):
            unexplained.append(f"{path.relative_to(REPO)}: {', '.join(found)}")
    assert not unexplained, "add a 'Size: <reason>' line or split:\n" + "\n".join(unexplained)


def test_no_two_public_classes_share_a_name() -> None:
    """One name, one idea (issue 14 found two ActionRecord, Rule and Toxic classes): a
    reader, a traceback or a search that meets the name knows which class it is."""
    where: dict[str, list[str]] = {}
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(str(path.relative_to(REPO / "src")))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert shared == {}, shared
