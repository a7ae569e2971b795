"""Launch the real ``qgis`` application with a throw-away profile and a driver script; collect its JSON result.

Used by the ``gui`` tests (run under ``xvfb-run`` by ``make test-gui``). The plugin is installed the way a user
installs it: the folder that ``scripts/package_plugin.py`` assembles, copied into
``<profiles>/profiles/default/python/plugins/rsp_segmentation`` and enabled in ``QGIS3.ini``. The project QGIS opens
is written by :func:`write_project`; the steps run inside QGIS with the driver's helpers (``pump``, ``wait_for``,
``screenshot``, ``plugin``, ``open_dialog``, ``result_groups``, ``class_labels``, ``map_screenshot``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SCREENSHOT_DIR = ROOT / "tests" / "artifacts" / "screenshots"
PLUGIN_NAME = "rsp_segmentation"
QGIS_TIMEOUT_S = 240

# Runs inside QGIS (``--code``): waits for start-up, runs the test's steps, writes result.json, then quits.
_DRIVER_PROLOGUE = textwrap.dedent(
    """
    import json, os, sys, time, traceback
    from qgis.PyQt.QtCore import QTimer, QCoreApplication, QEventLoop
    from qgis.PyQt.QtWidgets import QAction, QApplication
    from qgis.core import QgsApplication, QgsProject
    from qgis.utils import iface
    import qgis.utils

    RESULT_PATH = {result_path!r}
    SCREENSHOT_DIR = {screenshot_dir!r}
    result = {{"ok": False}}

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
            time.sleep(0.02)

    def wait_for(predicate, timeout_s, what):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return
            pump(0.1)
        raise TimeoutError("timed out after %ss waiting for %s" % (timeout_s, what))

    def screenshot(widget, name):
        path = SCREENSHOT_DIR + "/" + name
        pump(0.5)
        ok = widget.grab().save(path)
        result.setdefault("screenshots", []).append(path if ok else "FAILED " + path)
        return path

    def plugin():
        return qgis.utils.plugins.get({plugin_name!r})

    # Trigger the plugin's action, wait for its dialog (plugin().<attribute>), move it to (dx, dy) in the window.
    def open_dialog(action, attribute, dx, dy):
        wait_for(lambda: plugin() is not None, 30, "the plugin to load")
        iface.mainWindow().findChild(QAction, action).trigger()
        dlg = getattr(plugin(), attribute)
        wait_for(lambda: dlg is not None and dlg.isVisible(), 10, "the dialog " + attribute)
        dlg.move(iface.mainWindow().x() + dx, iface.mainWindow().y() + dy)
        return dlg

    # The layer-tree groups (the plugin puts each run's results in one).
    def result_groups():
        return [g for g in QgsProject.instance().layerTreeRoot().children() if hasattr(g, "findLayers")]

    # The class labels of each paletted result layer, by layer name.
    def class_labels():
        labels = {{}}
        for group in result_groups():
            for node in group.findLayers():
                renderer = node.layer().renderer()
                if hasattr(renderer, "classes"):
                    labels[node.layer().name()] = [c.label for c in renderer.classes()]
        return labels

    # Screenshot the main window showing the layer's extent, the layer tree expanded and no layer selected.
    def map_screenshot(layer, name):
        iface.layerTreeView().expandAll()
        iface.layerTreeView().setCurrentLayer(None)
        canvas = iface.mapCanvas()
        canvas.setExtent(layer.extent())
        canvas.refresh()
        canvas.waitWhileRendering()
        pump(1.0)
        return screenshot(iface.mainWindow(), name)
    """
)

_DRIVER_EPILOGUE = textwrap.dedent(
    """
    def _main():
        try:
            iface.mainWindow().resize(1400, 900)
            pump(1.0)
            steps(result)
            result["ok"] = True
        except Exception:
            result["traceback"] = traceback.format_exc()
        finally:
            with open(RESULT_PATH, "w") as f:
                json.dump(result, f)
            QgsProject.instance().clear()
            QTimer.singleShot(100, QgsApplication.instance().quit)

    QTimer.singleShot(1500, _main)
    """
)


def _load_package_module():
    spec = importlib.util.spec_from_file_location("package_plugin", ROOT / "scripts" / "package_plugin.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def make_profile(
    profiles: Path, settings: dict[str, dict[str, str]] | None = None, models: list[Path] | None = None
) -> Path:
    """Create a throw-away QGIS profile with the packaged plugin installed and enabled; return the plugin folder.

    ``models`` are copied into the profile's ``rsp_models/`` folder (the model manager's install location).
    """
    profile = profiles / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    folder = _load_package_module().assemble(plugins)
    if models:
        (profile / "rsp_models").mkdir()
        for model in models:
            shutil.copy(model, profile / "rsp_models" / model.name)
    ini = {
        "PythonPlugins": {PLUGIN_NAME: "true"},
        "app": {"askToSaveMemoryLayers": "false"},
        "qgis": {"askToSaveProjectChanges": "false", "checkVersion": "false"},
        "UI": {"hidePromoWidget": "true"},
        PLUGIN_NAME: {"interpreter": str(VENV_PYTHON)},
    }
    for section, values in (settings or {}).items():
        ini.setdefault(section, {}).update(values)
    (profile / "QGIS").mkdir(parents=True)
    lines = []
    for section, values in ini.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key}={value}" for key, value in values.items())
        lines.append("")
    (profile / "QGIS" / "QGIS3.ini").write_text("\n".join(lines), encoding="utf-8")
    return folder


def write_project(folder: Path, raster: Path, name: str, project_file: str, others: list | None = None) -> Path:
    """Write a QGIS project into ``folder`` (created if needed) for QGIS to open; return the project file.

    Args:
        folder: where the project and its raster go.
        raster: the raster to copy (writable) to ``<folder>/<name>.tif``: the project's first layer, named ``name``;
            the project's CRS is its CRS.
        name: the raster layer's name and file stem.
        project_file: the project's file name (``*.qgz``).
        others: more layers, added after the raster.
    """
    from qgis.core import QgsProject, QgsRasterLayer

    folder.mkdir(exist_ok=True)
    copy = folder / f"{name}.tif"
    shutil.copy(raster, copy)
    os.chmod(copy, 0o644)
    project = QgsProject()
    layer = QgsRasterLayer(str(copy), name, "gdal")
    assert layer.isValid()
    project.addMapLayers([layer, *(others or [])])
    project.setCrs(layer.crs())
    path = folder / project_file
    assert project.write(str(path))
    project.clear()
    return path


def run_qgis(
    tmp_path: Path,
    steps_source: str,
    project: Path | None = None,
    settings: dict[str, dict[str, str]] | None = None,
    timeout_s: int = QGIS_TIMEOUT_S,
    models: list[Path] | None = None,
) -> dict:
    """Start ``qgis`` with a fresh profile, run ``steps_source`` (defines ``steps(result)``), return result.json.

    ``steps_source`` runs inside QGIS with ``iface``, ``pump``, ``wait_for``, ``screenshot`` and ``plugin`` in scope.
    """
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    profiles = tmp_path / "qgis_profiles"
    make_profile(profiles, settings, models)
    result_path = tmp_path / "result.json"
    driver = tmp_path / "driver.py"
    driver.write_text(
        _DRIVER_PROLOGUE.format(
            result_path=str(result_path), screenshot_dir=str(SCREENSHOT_DIR), plugin_name=PLUGIN_NAME
        )
        + textwrap.dedent(steps_source)
        + _DRIVER_EPILOGUE,
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")}
    env.pop("QT_QPA_PLATFORM", None)
    # The installed plugin must be self-contained (its bundled engine/ copy): no repository on PYTHONPATH.
    env.pop("PYTHONPATH", None)
    env.setdefault("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    Path(env["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    cmd = ["qgis", "--profiles-path", str(profiles), "--nologo", "--noversioncheck", "--code", str(driver)]
    if project is not None:
        cmd += ["--project", str(project)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    log = (proc.stdout + proc.stderr)[-6000:]
    assert result_path.is_file(), f"QGIS exited ({proc.returncode}) without writing a result:\n{log}"
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["_returncode"] = proc.returncode
    result["_log"] = log
    assert result.get("ok"), result.get("traceback", "") + "\n" + log
    return result
