"""No import cycle among the modules of the ``stability`` package.

A cycle means two modules cannot be understood, tested or changed one without the other, and it breaks as
soon as one of them imports the other at module level. Lazy imports inside functions count too (they hide
the cycle from Python, not from the design); only imports under ``if TYPE_CHECKING:`` (annotations) do not.

The graph is read from the source with :mod:`ast`, so nothing here depends on what importing a module
happens to execute. An import of a package is an edge to its ``__init__.py``; ``from package import name``
is an edge to the submodule ``package.name`` when there is one, else to the package. Importing a submodule
also runs its parent packages' ``__init__.py``, but that is Python's loading order, not a dependency of the
importing module: those implicit edges are not drawn (else every package that re-exports its submodules
would be a cycle). Imports by name at run time (``importlib.import_module("stability.report")``, as the
command dispatcher does) are not statements and are not seen.
"""

from __future__ import annotations

import ast
import pkgutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import stability

PACKAGE = "stability"
# Modules whose imports must stay acyclic whatever the rest of the package does: the report and its inputs.
REPORT_MODULES = ("stability.report.plots", "stability.analysis.metrics", "stability.report")


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (source file, is a package)."""
    modules = {PACKAGE: (Path(stability.__file__), True)}
    for info in pkgutil.walk_packages(stability.__path__, prefix=f"{PACKAGE}."):
        spec = info.module_finder.find_spec(info.name, None)
        assert spec is not None and spec.origin is not None, info.name
        modules[info.name] = (Path(spec.origin), info.ispkg)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes``, at any depth, except inside ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)  # an ``else:`` branch runs
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _import_nodes(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module a dotted name refers to: itself, or its longest prefix that is a module of the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, modules: dict[str, tuple[Path, bool]]) -> set[str]:
    """The package's modules that module ``name`` imports (relative imports resolved)."""
    path, is_package = modules[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    here = name if is_package else name.rpartition(".")[0]  # the package relative imports start from
    named: list[str] = []  # dotted names; each stands for its longest prefix that is a module (_known)
    for node in _import_nodes(tree.body):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
            continue
        if node.level:
            base = here.split(".")[:len(here.split(".")) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        named += [f"{source}.{alias.name}" for alias in node.names]
    targets = {_known(n, modules) for n in named}
    return {t for t in targets if t is not None}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, for every module of the package."""
    modules = package_modules()
    return {name: imports_of(name, modules) for name in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: one per strongly connected component with more than one module (or a module that
    imports itself), each as a closed path ``[a, b, ..., a]`` through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_through(sorted(c), graph) for c in components]


def _path_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A closed path from the component's first module back to itself, inside the component (BFS)."""
    start = component[0]
    inside = set(component)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & inside):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [*reversed(path), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle through {component}")


def _describe(found: list[list[str]]) -> str:
    return "; ".join(" -> ".join(c) for c in found)


def _in_report(module: str) -> bool:
    return any(module == m or module.startswith(f"{m}.") for m in REPORT_MODULES)


# ------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph: dict[str, set[str]]) -> None:
    """The parser resolves what the cycle tests rely on (else they would pass on an empty graph)."""
    assert "stability.report.build" in graph["stability.report.cli"]  # from stability.report.build import ...
    assert "stability.analysis.metrics" in graph["stability.report.tables"]  # from stability.analysis import metrics as M
    assert "stability.report.figures" in graph["stability.report.cli"]  # lazy, inside a function
    assert "stability.report.build" not in graph["stability.report.formatting"]  # only under TYPE_CHECKING
    assert "stability.model.config" in graph["stability.model"]  # a package's __init__


def test_relative_conditional_and_lazy_imports(tmp_path: Path) -> None:
    files = {
        "stability": "__init__.py",
        "stability.a": "a.py",
        "stability.sub": "sub/__init__.py",
        "stability.sub.b": "sub/b.py",
        "stability.sub.c": "sub/c.py",
    }
    modules = {name: (tmp_path / f, f.endswith("__init__.py")) for name, f in files.items()}
    for path, _ in modules.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    (tmp_path / "sub/b.py").write_text(
        "import typing\n"
        "from . import c\n"  # a sibling submodule
        "from .. import name_in_init\n"  # a name from the package's __init__.py
        "if typing.TYPE_CHECKING:\n"
        "    from stability.a import Hidden\n"
        "else:\n"
        "    import numpy\n"  # not the package's
        "def f():\n"
        "    from stability.a import thing\n")
    assert imports_of("stability.sub.b", modules) == {"stability.sub.c", "stability", "stability.a"}
    (tmp_path / "sub/b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import stability.a\n")
    assert imports_of("stability.sub.b", modules) == set()
    (tmp_path / "sub/__init__.py").write_text("from .b import x\nfrom . import c as see\n")
    assert imports_of("stability.sub", modules) == {"stability.sub.b", "stability.sub.c"}


def test_cycles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["d", "d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_plots_know_nothing_of_the_report(graph: dict[str, set[str]]) -> None:
    """The report draws with the plots; the plots draw DataFrames (a notebook uses them without a report)."""
    assert not {m for m in graph["stability.report.plots"] if m == "stability.report" or m.startswith("stability.report.")}


def test_no_import_cycle_through_the_report_plots_or_metrics(graph: dict[str, set[str]]) -> None:
    found = [c for c in cycles(graph) if any(_in_report(m) for m in c)]
    assert not found, f"import cycle(s): {_describe(found)}"


def test_no_import_cycle_in_the_package(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, f"import cycle(s): {_describe(found)}"
