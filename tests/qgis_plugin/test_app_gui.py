"""The packaged plugin loads in the real ``qgis`` application (Xvfb) with a throw-away profile."""

from __future__ import annotations

import os

import pytest
from real_qgis import PLUGIN_NAME, run_qgis

pytestmark = pytest.mark.gui

STEPS_LOAD = """
def steps(result):
    wait_for(lambda: plugin() is not None, 20, "the plugin to load")
    result["active_plugins"] = sorted(qgis.utils.active_plugins)
    action = iface.mainWindow().findChild(QAction, "rspSegmentLayerAction")
    result["action_text"] = action.text() if action is not None else None
    from qgis.PyQt.QtWidgets import QToolBar
    toolbar = iface.mainWindow().findChild(QToolBar, "rspSegmentationToolbar")
    result["toolbar_visible"] = bool(toolbar is not None and toolbar.isVisible())
    result["toolbar_actions"] = [a.text() for a in toolbar.actions()] if toolbar is not None else []
    raster_menu = iface.rasterMenu()
    result["raster_menu"] = [
        sub.text() for a in raster_menu.actions() if a.menu() is not None for sub in a.menu().actions()
    ]
    result["torch_loaded"] = "torch" in sys.modules
    screenshot(iface.mainWindow(), "plugin_loaded_main_window.png")
"""


def test_plugin_loads_in_real_qgis(tmp_path) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server: run `make test-gui`")
    result = run_qgis(tmp_path, STEPS_LOAD)
    assert PLUGIN_NAME in result["active_plugins"]
    assert result["action_text"] == "Segment layer"
    assert result["toolbar_visible"]
    assert "Segment layer" in result["toolbar_actions"]
    assert "Segment layer" in result["raster_menu"]
    assert result["torch_loaded"] is False  # classFactory must not pull torch into QGIS start-up
    shot = result["screenshots"][0]
    assert os.path.getsize(shot) > 10_000
