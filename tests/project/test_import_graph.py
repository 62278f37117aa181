"""The import graph of ``lrp_lightning/``, read from the source with ``ast`` (every ``import`` and
``from ... import``, also those inside functions): it has no circle, ``core`` imports nothing of the
package above it, and lower rooms never import higher ones (the engine no callback and no demo, the
metrics no callback)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lrp_lightning"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set:
    """The package's modules that ``name`` imports: ``from pkg import x`` counts as ``pkg.x`` where that is
    a module, else as ``pkg``; relative imports are resolved against ``name``'s package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan), as sorted lists."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_the_real_imports():
    assert len(MODULES) > 60
    assert "lrp_lightning.core" in GRAPH["lrp_lightning.rules"]
    assert "lrp_lightning.transformer.gradient_rules" in GRAPH["lrp_lightning.composites"]
    assert "lrp_lightning.callbacks.attribution.callback" in GRAPH["lrp_lightning.callbacks.attribution"]


def test_the_package_has_no_import_circle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_circle_and_a_lazy_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    source = "def f():\n    from lrp_lightning.canonizers import Canonizer\n"
    tree_imports = {
        node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
    }
    assert tree_imports == {"lrp_lightning.canonizers"}


def test_core_imports_nothing_above_it():
    assert GRAPH["lrp_lightning.core"] <= {"lrp_lightning._arguments"}


def inside(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def in_engine(module: str) -> bool:
    return module != "lrp_lightning" and not any(
        inside(module, room) for room in ("lrp_lightning.callbacks", "lrp_lightning.demo")
    )


@pytest.mark.parametrize("room, higher", [
    (in_engine, ("lrp_lightning.callbacks", "lrp_lightning.demo")),
    (lambda module: inside(module, "lrp_lightning.metrics"), ("lrp_lightning.composites",)),
    (lambda module: inside(module, "lrp_lightning.transformer"), ("lrp_lightning.composites",)),
    (lambda module: inside(module, "lrp_lightning.callbacks"), ("lrp_lightning.demo",)),
], ids=["engine", "metrics", "transformer", "callbacks"])
def test_lower_rooms_never_import_higher_ones(room, higher):
    upward = sorted(
        (name, imported)
        for name, imports in GRAPH.items() if room(name)
        for imported in imports if any(inside(imported, top) for top in higher)
    )
    assert upward == []


def test_private_modules_are_imported_only_inside_their_own_package():
    """Token logic and model-state preservation are public (``transformer.tokens``, ``model_state``): no
    room reaches into another room's private modules (``metrics._checks``, ``metrics._model``, ...)."""
    def private_package(module):
        parts = module.split(".")
        return next((".".join(parts[:i]) for i, part in enumerate(parts) if part.startswith("_") and i > 1), None)

    reaching = sorted(
        (name, imported)
        for name, imports in GRAPH.items()
        for imported in imports
        if private_package(imported) is not None and not inside(name, private_package(imported))
    )
    assert reaching == []


def test_the_package_imports_its_modules_by_their_real_names():
    """The old names of moved modules (``lrp_lightning._moved.MOVED``) are for users' code: inside the package
    every import names the module where it lives, so that the graph above sees every edge."""
    from lrp_lightning._moved import MOVED

    def named_modules(path):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)

    old_names = sorted(
        (name, imported)
        for name, path in MODULES.items() if name != "lrp_lightning._moved"
        for imported in named_modules(path) if imported in MOVED
    )
    assert old_names == []
