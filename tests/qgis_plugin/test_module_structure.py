"""The plugin package's shape: every module says what it owns, and imports between its modules never form a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "qgis_plugin"


def _plugin_imports(path: Path) -> set[str]:
    """Plugin modules that ``path`` imports anywhere (module level or inside functions), by module name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                names.add(node.module.split(".")[0])
            elif node.level == 1:
                names.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("qgis_plugin."):
                names.add(node.module.split(".")[1])
    return {name for name in names if (PACKAGE_DIR / f"{name}.py").is_file()}


def test_every_module_has_a_docstring() -> None:
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), f"{path.name} has no docstring"


def test_no_import_cycles_between_plugin_modules() -> None:
    graph = {path.stem: _plugin_imports(path) for path in PACKAGE_DIR.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(module) :], module]))
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*stack, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
