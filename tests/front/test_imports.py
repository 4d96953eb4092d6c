"""The package's plan, checked: no import cycle, and every import runs down the wings' order.

A cycle means two modules cannot be understood, tested or changed one without the other. Every import
counts: at module level, lazy ones inside functions (they hide a dependency from Python, not from the design)
and those under ``if TYPE_CHECKING:`` (an annotation that needs another module is a dependency on it).

The wings (``stability.WINGS``, lowest first, documented in the package docstring) say which way imports
run: a module of one wing imports only from its own wing and the wings below it; the front door
(``stability.FRONT_DOOR``: the ``stability`` command, the demo, the docs sync) may import any wing, and no
wing imports it.

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


def package_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (source file, is a package)."""
    modules = {PACKAGE: (Path(stability.__file__), True)}
    for info in pkgutil.walk_packages(stability.__path__, prefix=f"{PACKAGE}."):
        spec = info.module_finder.find_spec(info.name, None)
        assert spec is not None and spec.origin is not None, info.name
        modules[info.name] = (Path(spec.origin), info.ispkg)
    return modules


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes``, at any depth: lazy and ``if TYPE_CHECKING:`` ones included."""
    for node in nodes:
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


def wing_of(module: str) -> str:
    """The wing a module belongs to (``stability.report.tables`` -> ``report``). The package itself holds
    only the version and this plan and imports nothing: it sits at the bottom with the errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "errors"


def rank(wing: str) -> int:
    """Position in the wings' order, lowest first; the front door comes after every wing."""
    return stability.WINGS.index(wing) if wing in stability.WINGS else len(stability.WINGS)


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run up the order (a wing importing a higher one, or any wing importing the front door)."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = wing_of(target), wing_of(module)
            if rank(low) > rank(high) or (low in stability.FRONT_DOOR and high not in stability.FRONT_DOOR):
                found.append(f"{module} ({high}) imports {target} ({low})")
    return found


# ------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_kind_of_import(graph: dict[str, set[str]]) -> None:
    """The parser resolves what the order and cycle tests rely on (else they would pass on an empty graph)."""
    assert "stability.report.build" in graph["stability.report.cli"]  # from stability.report.build import ...
    assert "stability.analysis.metrics" in graph["stability.report.tables"]  # from stability.analysis import metrics
    assert "stability.report.figures" in graph["stability.report.cli"]  # lazy, inside a function
    assert "stability.model.config" in graph["stability.model"]  # a package's __init__
    assert "stability.training.run" in graph["stability.sweep.runner"]  # lazy: lightning loads in the worker


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
    assert imports_of("stability.sub.b", modules) == {"stability.a"}  # an annotation's dependency counts
    (tmp_path / "sub/__init__.py").write_text("from .b import x\nfrom . import c as see\n")
    assert imports_of("stability.sub", modules) == {"stability.sub.b", "stability.sub.c"}


def test_cycles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["d", "d"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_plots_know_nothing_of_the_report(graph: dict[str, set[str]]) -> None:
    """The report draws with the plots; the plots draw DataFrames (a notebook uses them without a report): from
    their own wing they use only the palette and their layout helpers."""
    allowed = {"stability.report.palette", "stability.report.plot_layout"}
    used = {m for m in graph["stability.report.plots"] if m.startswith("stability.report")}
    assert used <= allowed, used - allowed


def test_no_import_cycle_in_the_package(graph: dict[str, set[str]]) -> None:
    found = cycles(graph)
    assert not found, f"import cycle(s): {_describe(found)}"


def test_every_import_runs_down_the_wings(graph: dict[str, set[str]]) -> None:
    found = back_arrows(graph)
    assert not found, "imports against the wings' order:\n" + "\n".join(found)


def test_the_bottom_imports_nothing_of_the_package(graph: dict[str, set[str]]) -> None:
    assert graph["stability"] == set()
    assert graph["stability.errors"] == set()


def test_every_module_belongs_to_a_wing_or_the_front_door(graph: dict[str, set[str]]) -> None:
    """A new top-level module must be placed: in a wing, or named in the front door."""
    known = set(stability.WINGS) | set(stability.FRONT_DOOR)
    assert not {wing_of(m) for m in graph} - known


def test_the_package_docstring_lists_the_wings_in_order() -> None:
    doc = stability.__doc__ or ""
    positions = [doc.find(f"``stability.{wing}``") for wing in stability.WINGS]
    assert -1 not in positions, [w for w, p in zip(stability.WINGS, positions) if p == -1]
    assert positions == sorted(positions)


def test_the_order_check_finds_a_back_arrow() -> None:
    """The check can fail: a training module importing the sweep, or a wing importing the front door."""
    graph = {"stability.training.run": {"stability.sweep.grid", "stability.record.files"},
             "stability.record.files": {"stability.errors"}, "stability.report.cli": {"stability.cli"}}
    assert back_arrows(graph) == [
        "stability.report.cli (report) imports stability.cli (cli)",
        "stability.training.run (training) imports stability.sweep.grid (sweep)",
    ]


MAX_LINES = 420  # "about 400": a module longer than this holds more than one job, or says why it does not
LONG_REASON = "reads best whole"  # the phrase a longer module's docstring uses to say why


def test_no_module_is_long_without_a_reason() -> None:
    long = []
    for name, (path, _) in package_modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and LONG_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name}: {len(text.splitlines())} lines")
    assert not long, f"modules over {MAX_LINES} lines whose docstring does not say why: {long}"
