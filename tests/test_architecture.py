"""Architecture rules enforced as tests: the one-way import rule and a valid plugin metadata.txt."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A meta-path finder that makes any import of qgis or PyQt5 fail, then imports every module of the package.
_BLOCKED_IMPORT_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("qgis", "PyQt5", "PyQt6", "sip"):
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    package = importlib.import_module(sys.argv[1])
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("qgis", "PyQt5", "PyQt6"))
    assert not leaked, leaked
    print(len(names))
    """
)


@pytest.mark.parametrize("package", ["engine", "training"])
def test_package_imports_without_qgis_or_qt(package: str) -> None:
    if not (ROOT / package / "__init__.py").exists():
        pytest.fail(f"package {package} is missing")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT_SCRIPT, package],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.strip().splitlines()[-1]) >= 1


def test_blocker_really_blocks() -> None:
    """The check above would be worthless if the blocker let qgis through: prove it refuses a direct import."""
    script = _BLOCKED_IMPORT_SCRIPT.replace("package = importlib", "import qgis.core\npackage = importlib")
    proc = subprocess.run(
        [sys.executable, "-c", script, "engine"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "blocked import of qgis" in proc.stderr


REQUIRED_METADATA = (
    "name",
    "qgisMinimumVersion",
    "qgisMaximumVersion",
    "version",
    "description",
    "about",
    "author",
    "email",
    "repository",
    "tracker",
    "homepage",
    "hasProcessingProvider",
)


def test_metadata_txt_is_valid() -> None:
    parser = configparser.ConfigParser()
    assert parser.read(ROOT / "metadata.txt", encoding="utf-8"), "metadata.txt missing"
    general = parser["general"]
    missing = [key for key in REQUIRED_METADATA if not general.get(key, "").strip()]
    assert not missing, f"metadata.txt lacks {missing}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "3.99"
    assert general["hasProcessingProvider"].lower() in ("yes", "true")
    version = general["version"].split(".")
    assert len(version) == 3 and all(part.isdigit() for part in version)
    for key in ("repository", "tracker", "homepage"):
        assert general[key].startswith("https://"), key
    assert "@" in general["email"]


def _module_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """``{module: modules of ``packages`` it imports}``: every import, at module level, under ``TYPE_CHECKING`` or
    inside a function (a lazy import still couples two modules), relative imports resolved."""
    import ast

    modules: dict[str, Path] = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {m for m in edges if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_in_engine_training_or_plugin() -> None:
    graph = _module_graph(("engine", "training", "qgis_plugin"))
    assert len(graph) > 100  # the walk really saw the packages
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_predict_batch_and_warmup_command_lines_offer_the_engine_options() -> None:
    """The choices of every command line and of the plugin come from engine.options, and agree."""
    import argparse

    from engine import options
    from engine.cli import build_parser
    from qgis_plugin import batch_parameters, parameters

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {}
    for command in ("predict", "batch", "warmup"):
        parser = sub.choices[command]
        choices[command] = {a.dest: (tuple(a.choices) if a.choices else None, a.default) for a in parser._actions}
    for command in ("predict", "batch"):
        assert choices[command]["precision"] == (options.PRECISIONS, options.PRECISION_DEFAULT)
        assert choices[command]["compile"] == (options.COMPILE_MODES, options.COMPILE_DEFAULT)
        assert choices[command]["blend"] == (options.BLEND_MODES, options.BLEND_DEFAULT)
        assert choices[command]["batch_size"][0] is None
        assert options.batch_size_for(choices[command]["batch_size"][1], exact=False) == options.BATCH_SIZE
        assert "exact" in choices[command]
    assert choices["warmup"]["precision"] == (options.PRECISIONS, options.PRECISION_DEFAULT)
    assert options.batch_size_for(choices["warmup"]["batch_size"][1], exact=False) == options.BATCH_SIZE
    assert parameters.PRECISIONS == options.PRECISIONS and parameters.DEFAULT_BATCH_SIZE == options.BATCH_SIZE
    assert batch_parameters.RASTER_EXTENSIONS == options.RASTER_EXTENSIONS
    assert batch_parameters.BatchParameters.__dataclass_fields__["batch_size"].default == options.BATCH_SIZE


def test_engine_modules_import_only_their_own_layer_or_below() -> None:
    """engine.LAYERS (documented in engine/__init__.py): no import reaches a higher layer, lazy imports included."""
    from engine import LAYERS

    layer = {module: i for i, (_name, modules) in enumerate(LAYERS) for module in modules}
    graph = _module_graph(("engine",))
    tops = {name.split(".")[1] for name in graph if name != "engine"}
    assert tops == set(layer), (
        f"modules without a layer: {tops - set(layer)}; layers without a module: {set(layer) - tops}"
    )
    upward = []
    for name, imported in graph.items():
        if name == "engine":
            continue
        here = layer[name.split(".")[1]]
        for target in imported:
            there = layer.get(target.split(".")[1]) if target != "engine" else 0
            if there is not None and there > here:
                upward.append(f"{name} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    assert upward == []
