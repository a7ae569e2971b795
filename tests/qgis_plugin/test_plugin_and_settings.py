"""Plugin entry points with pytest-qgis's iface, and the interpreter setting."""

from __future__ import annotations

import sys

from qgis.core import QgsApplication

import qgis_plugin
import qgis_plugin.plugin_settings as plugin_settings
from qgis_plugin.engine_locator import default_interpreter, project_venv_python


def test_init_gui_registers_action_and_provider_then_unloads(qgis_iface, qgis_processing) -> None:
    plugin = qgis_plugin.classFactory(qgis_iface)
    plugin.initGui()
    registry = QgsApplication.processingRegistry()
    try:
        assert plugin.segment_action.text() == "Segment layer"
        assert plugin.train_action.text() == "Train model"
        assert plugin.toolbar.actions() == [plugin.segment_action, plugin.train_action]
        for name in ("segmentraster", "finetune", "accuracy"):
            assert registry.algorithmById(f"rspsegmentation:{name}") is not None, name
    finally:
        plugin.unload()
    assert registry.algorithmById("rspsegmentation:segmentraster") is None
    assert plugin.toolbar is None


def test_interpreter_setting_and_default(qgis_app, tmp_path) -> None:
    venv = project_venv_python()
    if venv is not None:  # a source checkout after `make setup`: the venv next to the folder holding engine/
        assert default_interpreter() == str(venv)
        assert (venv.parents[2] / "engine" / "__init__.py").is_file()
    from qgis_plugin.settings_dialog import SettingsDialog

    dialog = SettingsDialog()
    dialog.interpreter.setFilePath(sys.executable)
    dialog.save()
    try:
        assert plugin_settings.interpreter() == sys.executable
    finally:
        plugin_settings.set_interpreter("")
    assert plugin_settings.interpreter() == default_interpreter()
