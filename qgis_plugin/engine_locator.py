"""Where the ``engine`` package and the Python interpreter that runs it are.

Decision (packaging): the plugin zip carries a copy of the pure-Python ``engine/`` package *inside* the plugin
folder (``rsp_segmentation/engine/``); in the source repository the repository root holds ``engine/`` next to
``qgis_plugin/``. :func:`engine_parent_dir` finds whichever applies. The engine subprocess is started as
``<interpreter> -m engine ...`` with ``PYTHONPATH=<engine_parent_dir>`` prepended, so the interpreter never needs the
engine installed. In-process, the plugin only reads model metadata (``engine.model_file``, standard library only);
:func:`ensure_engine_importable` puts the same folder on ``sys.path`` when ``engine`` is not importable already.
The ``training`` package (``python -m training finetune|accuracy``, run by the Train model dialog and the training
Processing algorithms) travels the same way: the zip carries it next to ``engine/`` in the plugin folder, the
repository holds it next to ``engine/``, so the same ``PYTHONPATH`` finds both (:func:`training_available`).

Decision (interpreter): QGIS's embedded Python usually lacks torch, and heavy inference inside QGIS risks taking it
down, so inference runs in a separate interpreter, chosen in this order: the path saved in the plugin settings; the
project venv ``.venv/bin/python`` next to the folder that holds ``engine/`` (a source checkout); QGIS's own Python
when it can import torch; otherwise QGIS's own Python anyway, and *Check environment* then says what to install.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .plugin_paths import PLUGIN_DIR

ENGINE_PACKAGE = "engine"
TRAINING_PACKAGE = "training"


class EngineNotFoundError(Exception):
    """The ``engine`` package is neither bundled with the plugin nor next to it: reinstall the plugin zip."""


def engine_parent_dir() -> Path:
    """Return the folder that holds ``engine/__init__.py``: the plugin folder (zip install) or its parent (repo).

    Raises:
        EngineNotFoundError: neither location holds the engine package.
    """
    for candidate in (PLUGIN_DIR, PLUGIN_DIR.parent):
        if (candidate / ENGINE_PACKAGE / "__init__.py").is_file():
            return candidate
    raise EngineNotFoundError(
        f"the engine package was not found in {PLUGIN_DIR} or {PLUGIN_DIR.parent}; "
        "reinstall the plugin from its zip (it bundles engine/)"
    )


def _importable_engine_is_ours() -> bool:
    """Whether ``import engine`` would give a real package holding ``model_file.py`` (not a namespace dir)."""
    try:
        spec = importlib.util.find_spec(ENGINE_PACKAGE)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith("__init__.py"):
        return False
    return (Path(spec.origin).parent / "model_file.py").is_file()


def ensure_engine_importable() -> None:
    """Make ``import engine`` give the engine package in QGIS's Python (puts :func:`engine_parent_dir` first on
    ``sys.path`` when ``engine`` is missing or is something else, such as a namespace directory)."""
    if _importable_engine_is_ours():
        return
    folder = str(engine_parent_dir())
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    for name in [m for m in sys.modules if m == ENGINE_PACKAGE or m.startswith(ENGINE_PACKAGE + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def training_available() -> bool:
    """Whether the ``training`` package sits next to the engine package (bundled or in the repository)."""
    try:
        return (engine_parent_dir() / TRAINING_PACKAGE / "__main__.py").is_file()
    except EngineNotFoundError:
        return False


def engine_pythonpath(existing: str | None = None) -> str:
    """``PYTHONPATH`` value for the engine subprocess: the engine's parent folder first, then ``existing``."""
    parts = [str(engine_parent_dir())]
    if existing:
        parts.append(existing)
    return os.pathsep.join(parts)


def project_venv_python() -> Path | None:
    """The source checkout's ``.venv`` interpreter next to the folder holding ``engine/``, or None."""
    try:
        root = engine_parent_dir()
    except EngineNotFoundError:
        return None
    for rel in (("bin", "python"), ("Scripts", "python.exe")):
        candidate = root.joinpath(".venv", *rel)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def qgis_python() -> Path | None:
    """QGIS's own Python interpreter (``sys.executable`` is the qgis binary inside QGIS, so look next to the prefix)."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python") and exe.is_file():
        return exe
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.exec_prefix)
    for candidate in (
        prefix / "bin" / f"python{version}",
        prefix / "bin" / "python3",
        prefix / "python.exe",
        prefix / "python3.exe",
    ):
        if candidate.is_file():
            return candidate
    return None


def default_interpreter() -> str:
    """Best default engine interpreter without the user's setting (see the module docstring for the order)."""
    venv = project_venv_python()
    if venv is not None:
        return str(venv)
    own = qgis_python()
    if own is not None:
        return str(own)
    return "python3"


def qgis_python_has_torch() -> bool:
    """Whether QGIS's own Python could import torch (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None
