"""``make package``'s zip: contents, metadata version, and it loads from a throw-away plugins folder."""

from __future__ import annotations

import configparser
import importlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "rsp_segmentation"


def _build(tmp_path: Path) -> Path:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_plugin.py"), "--out", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "dist" / f"{PLUGIN}.zip"


def test_zip_contents_and_metadata(tmp_path) -> None:
    names = set(zipfile.ZipFile(_build(tmp_path)).namelist())
    for required in (
        "__init__.py",
        "plugin.py",
        "metadata.txt",
        "icon.png",
        "README.md",
        "engine/__init__.py",
        "engine/model_file.py",
        "engine/cli.py",
        "engine/selfcheck.py",
    ):
        assert f"{PLUGIN}/{required}" in names, required
    for module in sorted((ROOT / "qgis_plugin").glob("*.py")):  # every plugin module, new ones included
        assert f"{PLUGIN}/{module.name}" in names, module.name
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert all(n.startswith(f"{PLUGIN}/") for n in names)
    meta = configparser.ConfigParser(interpolation=None)
    meta.read_string(zipfile.ZipFile(tmp_path / "dist" / f"{PLUGIN}.zip").read(f"{PLUGIN}/metadata.txt").decode())
    version = next(
        line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version")
    )
    assert meta["general"]["version"] == version
    assert meta["general"]["qgisMinimumVersion"] == "3.22"
    assert meta["general"]["icon"] == "icon.png"


def test_zip_installs_and_loads_with_iface(qgis_iface, tmp_path, monkeypatch) -> None:
    plugins = tmp_path / "profile" / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(_build(tmp_path)).extractall(plugins)
    # The installed copy must not borrow the repository's engine: hide it from sys.path and sys.modules.
    monkeypatch.setattr(sys, "path", [str(plugins)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for name in [m for m in sys.modules if m == "engine" or m.startswith("engine.")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module(PLUGIN)
    plugin = module.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert plugin.segment_action.text() == "Segment layer"
        from rsp_segmentation.engine_locator import engine_parent_dir, ensure_engine_importable

        assert engine_parent_dir() == plugins / PLUGIN  # the bundled engine copy
        ensure_engine_importable()
        import engine.model_file

        assert Path(engine.model_file.__file__).parent == plugins / PLUGIN / "engine"
    finally:
        plugin.unload()
        for name in [m for m in sys.modules if m == PLUGIN or m.startswith(PLUGIN + ".")]:
            del sys.modules[name]


def test_zip_carries_the_training_package_and_it_runs_from_the_plugin_folder(tmp_path) -> None:
    """``python -m training finetune|accuracy`` (Train model, the training algorithms) from the installed copy only."""
    archive = zipfile.ZipFile(_build(tmp_path))
    names = set(archive.namelist())
    for module in sorted((ROOT / "training").rglob("*.py")):  # every training module, sub-packages included
        relative = module.relative_to(ROOT).as_posix()
        assert f"{PLUGIN}/{relative}" in names, relative
    plugins = tmp_path / "plugins"
    archive.extractall(plugins)
    folder = plugins / PLUGIN
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(folder)  # what the engine runner sets (engine_locator.engine_pythonpath)
    probe = (
        "import engine, training, training.finetune.run, training.finetune.accuracy, training.finetune.training; "
        "print(engine.__file__); print(training.finetune.run.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert all(line.startswith(str(folder)) for line in proc.stdout.split()), proc.stdout
    for command, option in (("finetune", "--labels"), ("accuracy", "--prediction")):
        proc = subprocess.run(
            [sys.executable, "-m", "training", command, "--help"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0 and option in proc.stdout, proc.stderr
