"""No import cycles among the project's modules, function-level imports included.

The graph has an edge ``a -> b`` for every ``import b`` / ``from b import x`` written in module
``a`` (at any depth of the file), where ``b`` is a project module (``from pkg import sub`` counts
as importing ``pkg.sub`` when that is a module). Importing a submodule does not add an edge to its
package's ``__init__``: only what is written counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("onnxslim", "passes", "calibration", "benchmarks")


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules and name != module)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules(root, packages)
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A cycle through the first member, found breadth-first inside the component."""
    start = min(members)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(members)


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_finder_sees_a_function_level_cycle(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from pkg import a\n    return a\n",
        "pkg/c.py": "from . import a\nimport numpy\n",
    })
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg"] == {"pkg.a"}
    assert "pkg" not in graph["pkg.a"]  # no implicit edge from a submodule to its package
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
    (tmp_path / "pkg/b.py").write_text("def f():\n    return 1\n")
    assert find_cycles(import_graph(tmp_path, ("pkg",))) == []


def test_every_form_of_import_is_an_edge(tmp_path: Path) -> None:
    _package(tmp_path, {
        "pkg/__init__.py": "X = 1\n",
        "pkg/sub/__init__.py": "from . import d\n",
        "pkg/sub/d.py": "from ..c import g\nfrom .. import X\n",
        "pkg/c.py": "import pkg.sub.d as dd\n\nclass K:\n    def m(self):\n        import pkg.e\n",
        "pkg/e.py": "if True:\n    from pkg.sub import d\n",
        "other/__init__.py": "",
    })
    graph = import_graph(tmp_path, ("pkg", "other"))
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.d"}, "pkg.sub.d": {"pkg.c", "pkg"},
                     "pkg.c": {"pkg.sub.d", "pkg.e"}, "pkg.e": {"pkg.sub.d"}, "other": set()}
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and cycles[0][0] == cycles[0][-1] == "pkg.c"
    assert set(cycles[0]) == {"pkg.c", "pkg.sub.d"}  # the shortest cycle through the first module


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph(REPO, PACKAGES))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
