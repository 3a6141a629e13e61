"""The shape of the source tree (issues 10, 23): no import cycles (type-only imports count too), the faces over the
serving layer, no function over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Every retouch module imported anywhere in ``tree``: inside functions and under ``TYPE_CHECKING`` too (a
    type-only import is still a dependency of the design)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            while name:  # importing a.b.c runs a and a.b (their __init__) first
                if name != module and name in known:
                    found.add(name)
                name = name.rpartition(".")[0]
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    known = set(files)
    return {name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _ancestors_are_packages(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles():
    graph = _graph()
    # A package's __init__ is imported whenever one of its modules is; that edge is not a design choice.
    for name, deps in graph.items():
        deps -= _ancestors_are_packages(name)
    assert _cycles(graph) == []


def test_the_faces_use_the_server_only_through_its_app():
    # the page and the cluster talk to the serving layer; of the HTTP server they may use only its app
    graph = _graph()
    found = {(name, dep) for name, deps in graph.items() for dep in deps
             if name.startswith(("retouch.ui", "retouch.cluster")) and dep.startswith("retouch.server")
             and dep not in ("retouch.server", "retouch.server.app")}
    assert found == set()


def test_the_serving_layer_speaks_no_http_and_draws_no_page():
    graph = _graph()
    found = {(name, dep) for name, deps in graph.items() for dep in deps
             if name.startswith("retouch.serving") and dep.startswith(("retouch.server", "retouch.ui", "retouch.cli",
                                                                        "retouch.cluster"))}
    assert found == set()


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_long_functions():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []
