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
        for name in ("segmentraster", "finetune", "accuracy", "suggest"):
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


def test_compile_ahead_starts_engine_warmup_and_stops_on_request(qgis_app, real_model, venv_interpreter,
                                                                 monkeypatch) -> None:  # fmt: skip
    """The environment check's *Compile ahead* runs ``engine warmup`` for the chosen model (a real process) and its
    Stop button cancels it: the status line says so and nothing is recorded."""
    from plugin_test_support import wait_until

    import qgis_plugin.model_catalog as model_catalog
    from qgis_plugin import settings_dialog
    from qgis_plugin.settings_dialog import COMPILE_BUTTON, SettingsDialog

    entry = model_catalog.read_entry(real_model)
    monkeypatch.setattr(settings_dialog, "list_models", lambda: [entry])
    dialog = SettingsDialog()
    dialog.interpreter.setFilePath(venv_interpreter)
    assert dialog.warm_model.count() == 1 and dialog.warm_model.currentData() == str(real_model)
    dialog.warm_button.click()
    runner = dialog._warm_runner
    assert runner is not None and runner.args[:3] == ["warmup", "--model", str(real_model)]
    assert dialog.warm_button.text() == "Stop"
    assert wait_until(runner.is_running, 10)
    dialog.warm_button.click()  # Stop
    assert wait_until(lambda: dialog.warm_button.text() == COMPILE_BUTTON, 15)
    assert not runner.is_running()
    assert "Stopped" in dialog.warm_status.text()
    dialog.reject()
