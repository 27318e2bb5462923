"""The shape of the code: the product never imports the lab, and no module imports itself in a circle.

Imports are read from the source with `ast`, including the ones inside functions, which hide a cycle from
Python at import time but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("tailnix", "tailnix_lab")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth of its code)."""
    modules = {_module_name(path): path for package in PACKAGES for path in (SRC / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                target = target.strip(".")
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def test_the_product_never_imports_the_lab() -> None:
    graph = _imports()
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "tailnix"
        for target in targets
        if target.split(".")[0] == "tailnix_lab"
    )
    assert offenders == []
    assert any(target.startswith("tailnix.") for target in graph["tailnix_lab.emulator.activation"]), (
        "the walk sees imports"
    )


def test_no_module_imports_itself_in_a_circle() -> None:
    graph = _imports()
    cycles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            # A package's __init__ importing its own submodules is not a cycle worth naming.
            if state.get(target) == 1 and not module.startswith(target + "."):
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
