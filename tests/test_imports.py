"""The import graph of wasup's packages: no cycle anywhere, and the layers point one way.

The modules of ``common``, ``supervisor``, ``api`` and ``storage`` are read with :mod:`ast` (none
is imported), so the test sees every import, those under ``TYPE_CHECKING`` and inside functions
included: a cycle hidden behind ``TYPE_CHECKING`` is still a cycle to a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "supervisor", "api", "storage")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for target in targets:
            # The longest known prefix: `import storage.outbox` is storage.outbox, and a name
            # imported from a module is that module.
            parts = target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                out.add(".".join(parts))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's __init__ runs before any of its modules, so a module importing its own
    # package is an edge like any other: an __init__ that imports its modules back makes a
    # cycle (``from api.ws import transport`` reaches api.ws itself).
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
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
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_the_walk_sees_the_packages() -> None:
    graph = _graph()
    assert {"supervisor.actor", "supervisor.devices", "api.errors", "storage.db"} <= set(graph)
    assert "supervisor.directory" in graph["supervisor.devices"]


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_layers_point_one_way() -> None:
    """storage imports neither supervisor nor api; supervisor never imports api; common
    imports none of them."""
    wrong = sorted(
        (name, target)
        for name, targets in _graph().items()
        for target in targets
        if (name.startswith("storage") and target.split(".")[0] in {"supervisor", "api"})
        or (name.startswith("supervisor") and target.split(".")[0] == "api")
        or (name.startswith("common") and target.split(".")[0] in {"supervisor", "api", "storage"})
    )
    assert wrong == []


def test_the_directory_knows_nothing_of_actors() -> None:
    graph = _graph()
    assert not graph["supervisor.directory"] & {
        "supervisor.actor", "supervisor.children", "supervisor.devices", "supervisor.supervisor"
    }


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
