"""End to end in the real ``qgis`` application (Xvfb): open a project with a real raster, open the dialog, run the
real engine with a model file, and check the styled result layers; a first run is cancelled mid-way.

Screenshots (tests/artifacts/screenshots/): ``segment_dialog.png`` (dialog ready to run), ``segment_dialog_running.png``
(progress mid-run, just before Cancel), ``map_with_results.png`` (main window with the result group).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from plugin_test_support import CLASS_NAMES, DATA
from real_qgis import run_qgis, write_project

pytestmark = pytest.mark.gui

URBAN_RASTER = DATA / "swissimage" / "lausanne_1091-322_00_big.tif"  # 875×600 RGB, EPSG:2056, 0.5 m

STEPS = """
def steps(result):
    from qgis.PyQt.QtCore import QTimer
    layer = list(QgsProject.instance().mapLayers().values())[0]
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    dlg = open_dialog("rspSegmentLayerAction", "dialog", 700, 120)
    dlg.layer_combo.setLayer(layer)
    dlg.vector_check.setChecked(True)
    dlg.confidence_check.setChecked(True)
    dlg.overwrite_check.setChecked(False)
    outputs = [dlg.raster_out.filePath(), dlg.vector_out.filePath(), dlg.confidence_out.filePath()]
    result["outputs"] = outputs
    result["model"] = dlg.model_combo.currentText()
    result["bands"] = dlg.bands_edit.text()

    # Run 1: cancel as soon as progress shows.
    dlg.batch_spin.setValue(1)
    dlg.run_button.click()
    wait_for(lambda: dlg.progress.value() > 0 or dlg.runner is None, 120, "the first progress event")
    result["cancel_progress"] = dlg.progress.value()
    screenshot(dlg, "segment_dialog_running.png")
    dlg.cancel_button.click()
    wait_for(lambda: dlg.runner is None, 30, "the cancel to finish")
    result["cancel_status"] = dlg.status_label.text()
    result["after_cancel_exists"] = [os.path.exists(p) for p in outputs]
    result["after_cancel_dir"] = sorted(os.listdir(os.path.dirname(outputs[0])))
    fired = []
    QTimer.singleShot(10, lambda: fired.append(True))
    wait_for(lambda: fired, 5, "a timer (QGIS responsive)")
    result["responsive"] = bool(fired) and iface.mainWindow().isVisible()

    # Run 2: to the end.
    dlg.batch_spin.setValue(4)
    screenshot(dlg, "segment_dialog.png")
    dlg.run_button.click()
    wait_for(lambda: dlg.runner is None, 240, "the run to finish")
    result["status"] = dlg.status_label.text()
    groups = result_groups()
    result["groups"] = [g.name() for g in groups]
    layers = {}
    for group in groups:
        for node in group.findLayers():
            lyr = node.layer()
            renderer = lyr.renderer()
            info = {"renderer": type(renderer).__name__, "visible": node.isVisible(), "source": lyr.source()}
            if hasattr(renderer, "classes"):
                info["labels"] = [c.label for c in renderer.classes()]
            if hasattr(renderer, "categories"):
                info["labels"] = [c.label() for c in renderer.categories()]
            layers[lyr.name()] = info
    result["layers"] = layers
    dlg.hide()
    map_screenshot(layer, "map_with_results.png")
"""


@pytest.fixture
def urban_project(qgis_app, tmp_path) -> Path:
    """A .qgz holding a writable copy of the real SWISSIMAGE raster, project CRS from the layer."""
    return write_project(tmp_path / "project", URBAN_RASTER, "lausanne", "segment.qgz")


def test_segment_layer_end_to_end(tmp_path, urban_project, real_model) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server: run `make test-gui`")
    result = run_qgis(tmp_path, STEPS, project=urban_project, models=[real_model])
    folder = urban_project.parent
    stem = f"lausanne_{real_model.stem}"
    assert result["outputs"] == [
        str(folder / f"{stem}_classes.tif"),
        str(folder / f"{stem}_polygons.gpkg"),
        str(folder / f"{stem}_confidence.tif"),
    ]  # defaults next to the input
    assert result["model"] == real_model.stem
    assert result["bands"] == "1,2,3"

    assert result["cancel_progress"] > 0, "the run ended before it could be cancelled"
    assert result["after_cancel_exists"] == [False, False, False], result["after_cancel_dir"]
    assert "Cancelled" in result["cancel_status"]
    assert result["responsive"]

    assert result["status"].startswith("Done"), result["status"]
    assert result["groups"] == [f"lausanne – {real_model.stem}"]
    layers = result["layers"]
    assert layers["lausanne classes"]["renderer"] == "QgsPalettedRasterRenderer"
    assert layers["lausanne classes"]["labels"] == list(CLASS_NAMES)
    assert layers["lausanne polygons"]["renderer"] == "QgsCategorizedSymbolRenderer"
    assert layers["lausanne polygons"]["labels"] == list(CLASS_NAMES)
    assert layers["lausanne confidence"]["renderer"] == "QgsSingleBandGrayRenderer"
    assert all(os.path.isfile(p) for p in result["outputs"])
    for shot in result["screenshots"]:
        assert not shot.startswith("FAILED") and os.path.getsize(shot) > 5_000, shot
