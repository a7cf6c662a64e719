"""Imports point only downward: each layer uses the ones below it, never one above (README, Development), and no
two modules import each other, directly or round a longer circle.

Every import statement counts, wherever it stands (inside a function, under TYPE_CHECKING): a lazy import is an
arrow all the same, and an import moved into a function to dodge a circle is still one. localbus and localdts
import nothing of the product, so either can be lifted out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Top to bottom; a module may import its own layer and those below. The first prefix that matches names the layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench", ("bench",)),
    ("command line", ("sbworker.cli", "sbworker.commands", "sbworker.dev", "sbworker.__main__")),
    ("dashboard", ("sbworker.dashboard",)),
    ("operations and the local stack", ("sbworker.operations", "sbworker.localstack")),
    ("service path", ("listener",)),
    ("workflows", ("orchestrations", "activities")),
    ("observability", ("sbworker.observability",)),
    ("core", ("sbworker.core", "sbworker.patches", "=sbworker")),  # the package itself: import-light
)
PRODUCT = ("bench", "sbworker", "listener", "orchestrations", "activities")
INDEPENDENT = ("localbus", "localdts")


def layer_of(module: str) -> int | None:
    for rank, (_name, prefixes) in enumerate(LAYERS):
        if any(module == p.lstrip("=") or (not p.startswith("=") and module.startswith(p + ".")) for p in prefixes):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from sbworker import patches` imports sbworker.patches: judge the names, not only the package.
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
    return found


def target(imported: str) -> str:
    """`from a.b import c` yields a.b.c, which may be a function: fall back to the longest module prefix."""
    parts = imported.split(".")
    while len(parts) > 1:
        candidate = REPO.joinpath(*parts)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return parts[0]


def sources(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py"))


def test_the_layers_cover_every_product_module() -> None:
    unplaced = [module_name(p) for p in sources(*PRODUCT) if layer_of(module_name(p)) is None]
    assert not unplaced


def test_no_import_points_upward() -> None:
    upward = []
    for path in sources(*PRODUCT):
        here = layer_of(module_name(path))
        assert here is not None
        for line, imported in imports(path):
            there = layer_of(target(imported))
            if there is not None and there < here:
                upward.append(f"{path.relative_to(REPO)}:{line}: {LAYERS[here][0]} imports {target(imported)} "
                              f"({LAYERS[there][0]})")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", INDEPENDENT)
def test_the_local_stack_imports_nothing_of_the_product(package: str) -> None:
    leaks = [f"{path.relative_to(REPO)}:{line}: {imported}" for path in sources(package)
             for line, imported in imports(path) if imported.split(".")[0] in PRODUCT]
    assert not leaks, f"{package} must stay independent of the product:\n" + "\n".join(leaks)


def import_graph(*roots: str) -> dict[str, dict[str, int]]:
    """module → {module it imports: line of the first such import}, for every module under `roots`."""
    graph: dict[str, dict[str, int]] = {}
    for path in sources(*roots):
        here = module_name(path)
        arrows = graph.setdefault(here, {})
        for line, imported in imports(path):
            arrows.setdefault(target(imported), line)
    return {module: {to: line for to, line in arrows.items() if to in graph and to != module}
            for module, arrows in graph.items()}


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_modules_import_each_other() -> None:
    """A circle works only in the order Python happens to load it, and means neither module is below the other."""
    graph = import_graph(*PRODUCT, *INDEPENDENT)
    described = []
    for group in circles(graph):
        arrows = [f"  {module} -> {other} (line {graph[module][other]})" for module in group
                  for other in group if other in graph[module]]
        described.append(" <-> ".join(group) + "\n" + "\n".join(arrows))
    assert not described, "modules importing each other:\n" + "\n".join(described)


def test_a_circle_is_caught() -> None:
    """The check itself: a circle of three, beside modules outside it, is one group."""
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"a": 1}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b": 1}, "b": {}}) == []


def test_an_upward_import_is_caught() -> None:
    """The check itself: a core module importing the service path is reported."""
    assert layer_of(target("listener.receiver")) is not None
    assert layer_of("sbworker.core.config") > layer_of(target("listener.receiver"))  # type: ignore[operator]
