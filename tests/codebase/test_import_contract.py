"""DESIGN.md's import rules, read from the real import graph of ``src/``.

- ``engine/``, ``faults/`` and ``targets/`` import no pytest, not even through another
  module of the package (the engine runs on its own as ``python -m pytest_resilience.engine
  serve``; faults are used from plain Python);
- ``targets/`` imports none of ``faults``, ``engine``, ``slo``, ``report``, ``timeline``
  (imports flow one way: everything above the seam depends on targets, never back);
- no import cycle among the package's modules.

The graph comes from ``ast`` over every file (comments and strings do not count), with every
``import``/``from ... import`` statement: module level and inside functions alike, since a
lazy import still runs before the code that needs it. Imports under ``if TYPE_CHECKING:``
never run: they count for the layering rule (a type-only upward dependency still couples the
rooms) but not for pytest or cycles. Importing ``a.b.c`` runs ``a/__init__.py`` and
``a/b/__init__.py`` first, so those edges are added for the pytest rule. Names built at run
time (``importlib.import_module(f"...")``) are not seen.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import pytest_resilience

SRC = Path(pytest_resilience.__file__).parent.parent
PACKAGE = "pytest_resilience"
NO_PYTEST = ("engine", "faults", "targets")
BELOW_THE_SEAM = "targets"
ABOVE_THE_SEAM = ("faults", "engine", "slo", "report", "timeline")


@dataclass(frozen=True)
class Import:
    """One edge: ``source`` imports ``target`` at ``line`` (``type_only``: TYPE_CHECKING)."""

    source: str
    target: str
    line: int
    type_only: bool


@dataclass
class ImportGraph:
    """Every import of every module of one package under ``root``."""

    root: Path
    package: str
    modules: dict[str, Path] = field(default_factory=dict, repr=False)
    imports: list[Import] = field(default_factory=list, repr=False)

    def runtime(self, *, with_parents: bool = False) -> dict[str, set[str]]:
        """Module -> the modules it imports when it runs (all of them, not only ours)."""
        graph: dict[str, set[str]] = {name: set() for name in self.modules}
        for edge in self.imports:
            if not edge.type_only:
                graph[edge.source].add(edge.target)
        if with_parents:
            for name, targets in graph.items():
                for dotted in [name, *targets]:
                    parts = dotted.split(".")
                    graph[name].update(
                        parent
                        for parent in (".".join(parts[:i]) for i in range(1, len(parts)))
                        if parent in self.modules and parent != name
                    )
        return graph

    def where(self, source: str, target: str) -> str:
        """``path:line`` of the first statement in ``source`` importing ``target``."""
        line = next((e.line for e in self.imports if (e.source, e.target) == (source, target)), 0)
        return f"{self.modules[source].relative_to(self.root).as_posix()}:{line}"


def import_graph(root: Path, package: str) -> ImportGraph:
    """Parse every ``.py`` of ``root/package`` and resolve its imports to module names."""
    graph = ImportGraph(root, package)
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        graph.modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for name, path in graph.modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node, type_only in _import_statements(tree.body, type_only=False):
            for target in _resolve(node, name, is_package, graph.modules):
                graph.imports.append(Import(name, target, node.lineno, type_only))
    return graph


def _import_statements(
    body: Iterable[ast.stmt], *, type_only: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_statements(node.body, type_only=True)
            yield from _import_statements(node.orelse, type_only=type_only)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _import_statements([child], type_only=type_only)
                elif isinstance(child, ast.excepthandler):
                    yield from _import_statements(child.body, type_only=type_only)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join([*here, *([node.module] if node.module else [])])
    # ``from pkg import sub`` imports the module pkg.sub; ``from pkg import name``, pkg itself
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def _in(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def _chain(graph: dict[str, set[str]], start: str, hit: Iterable[str]) -> list[str] | None:
    """The shortest import chain from ``start`` to a module in ``hit``, if any."""
    wanted, seen, queue = set(hit), {start: ""}, [start]
    for current in queue:
        if current in wanted and current != start:
            chain = [current]
            while seen[chain[-1]]:
                chain.append(seen[chain[-1]])
            return chain[::-1]
        for nxt in sorted(graph.get(current, ())):
            if nxt not in seen:
                seen[nxt] = current
                queue.append(nxt)
    return None


def pytest_breaches(graph: ImportGraph, rooms: Iterable[str]) -> list[str]:
    """Each module of ``rooms`` from which pytest is imported, with the chain that does it."""
    runtime = graph.runtime(with_parents=True)
    outside = {t for targets in runtime.values() for t in targets} - set(graph.modules)
    pytest_like = {m for m in outside if _in(m, "pytest") or _in(m, "_pytest")}
    breaches = []
    for room in (f"{graph.package}.{r}" for r in rooms):
        for module in sorted(m for m in graph.modules if _in(m, room)):
            chain = _chain(runtime, module, pytest_like)
            if chain:
                first = graph.where(chain[-2], chain[-1])
                breaches.append(f"{module} imports pytest: {' -> '.join(chain)} ({first})")
    return breaches


def layering_breaches(graph: ImportGraph, below: str, above: Iterable[str]) -> list[str]:
    """Each module of ``below`` that imports (directly or through others) one of ``above``."""
    edges: dict[str, set[str]] = {name: set() for name in graph.modules}
    for edge in graph.imports:
        edges[edge.source].add(edge.target)
    forbidden = [f"{graph.package}.{room}" for room in above]
    upward = {m for m in graph.modules if any(_in(m, room) for room in forbidden)}
    room = f"{graph.package}.{below}"
    breaches = []
    for module in sorted(m for m in graph.modules if _in(m, room)):
        chain = _chain(edges, module, upward)
        if chain:
            first = graph.where(chain[-2], chain[-1])
            breaches.append(f"{module} imports {chain[-1]}: {' -> '.join(chain)} ({first})")
    return breaches


def import_cycles(graph: ImportGraph) -> list[str]:
    """Each cycle among the package's own modules, as ``a -> b -> a`` with where it closes."""
    runtime = {
        name: {t for t in targets if t in graph.modules}
        for name, targets in graph.runtime().items()
    }
    cycles: list[str] = []
    seen: set[str] = set()
    for start in sorted(runtime):
        if start in seen:
            continue
        for nxt in sorted(runtime[start]):
            back = [nxt] if nxt == start else _chain(runtime, nxt, [start])
            if back:
                loop = [start, *back]
                seen.update(loop)
                cycles.append(f"{' -> '.join(loop)} (closed at {graph.where(loop[-2], loop[-1])})")
                break
    return cycles


# -- the contract, on the real package -------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return import_graph(SRC, PACKAGE)


def test_the_graph_sees_the_package(graph: ImportGraph) -> None:
    # guards the checker itself: an empty or unresolved graph would pass every rule
    assert f"{PACKAGE}.engine.playbooks" in graph.modules
    assert any(e.target == f"{PACKAGE}.targets.base" for e in graph.imports)
    assert any(_in(e.target, "pytest") for e in graph.imports if e.source.endswith(".plugin"))


def test_engine_faults_targets_import_no_pytest(graph: ImportGraph) -> None:
    assert pytest_breaches(graph, NO_PYTEST) == []


def test_targets_import_nothing_above_the_seam(graph: ImportGraph) -> None:
    assert layering_breaches(graph, BELOW_THE_SEAM, ABOVE_THE_SEAM) == []


def test_no_import_cycle(graph: ImportGraph) -> None:
    cycles = import_cycles(graph)
    # An import inside a function only delays the cycle. Break it by moving what both
    # modules need into one of its own, as engine/registry.py and engine/durations.py did.
    assert cycles == [], "\n".join(cycles)


# -- the checker fails on a violation ----------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_checker_finds_pytest_through_a_lazy_import_and_a_package_init(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "glue.py": "import pytest\n",
            "engine/__init__.py": "",
            "engine/run.py": "def go():\n    from ..glue import x\n",
            "faults/__init__.py": "from .. import glue\n",
            "faults/kill.py": "",
            "targets/__init__.py": "",
            "targets/base.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pytest\n"
            ),
        },
    )
    breaches = pytest_breaches(import_graph(root, "pkg"), NO_PYTEST)
    assert breaches == [
        "pkg.engine.run imports pytest: pkg.engine.run -> pkg.glue -> pytest (pkg/glue.py:1)",
        "pkg.faults imports pytest: pkg.faults -> pkg.glue -> pytest (pkg/glue.py:1)",
        # its package's __init__ runs first
        "pkg.faults.kill imports pytest: pkg.faults.kill -> pkg.faults -> pkg.glue -> pytest "
        "(pkg/glue.py:1)",
    ]


def test_checker_finds_an_upward_import_from_targets(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "timeline.py": "",
            "probes.py": "from . import timeline\n",
            "targets/__init__.py": "",
            "targets/local.py": "from ..probes import something\n",
            "targets/kube.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.timeline import Timeline\n"
            ),
            "targets/base.py": "import os\n",
        },
    )
    assert layering_breaches(import_graph(root, "pkg"), BELOW_THE_SEAM, ABOVE_THE_SEAM) == [
        "pkg.targets.kube imports pkg.timeline: pkg.targets.kube -> pkg.timeline "
        "(pkg/targets/kube.py:3)",
        "pkg.targets.local imports pkg.timeline: pkg.targets.local -> pkg.probes -> "
        "pkg.timeline (pkg/probes.py:1)",
    ]


def test_checker_finds_a_cycle_closed_by_a_bottom_or_lazy_import(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from .b import x\n",
            "b.py": "x = 1\ndef f():\n    from . import a\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n",
            "d.py": "from . import c\n",
        },
    )
    assert import_cycles(import_graph(root, "pkg")) == [
        "pkg.a -> pkg.b -> pkg.a (closed at pkg/b.py:3)"
    ]
