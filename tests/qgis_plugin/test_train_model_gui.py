"""Train model in the real ``qgis`` application (Xvfb): a labels layer styled by categories → Train model (a tiny real
fine-tune of the bundled demo model) → hold-out metrics in the dialog → "Segment <layer> with the new model" → the
Segment dialog runs the new model on the layer, whose result carries the labels layer's class names.

Screenshots (tests/artifacts/screenshots/): ``train_dialog.png`` (the dialog after the run, metrics shown; copied to
resources/screenshots/ for the README) and ``train_map.png`` (the labels and the new model's result).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from plugin_test_support import ANALYST_STYLE, POTSDAM_LABELS, POTSDAM_RASTER, polygons_from_raster, style_by_categories
from real_qgis import run_qgis, write_project

pytestmark = pytest.mark.gui

STEPS = """
def steps(result):
    project = QgsProject.instance()
    raster = project.mapLayersByName("potsdam_2_10")[0]
    labels = project.mapLayersByName("my labels")[0]
    iface.mapCanvas().setExtent(raster.extent())
    dlg = open_dialog("rspTrainModelAction", "train_dialog", 600, 40)
    dlg.raster_combo.setLayer(raster)
    dlg.labels_combo.setLayer(labels)
    result["field"] = dlg.field_combo.currentField()  # picked from the layer's style
    result["start_model"] = dlg.model_combo.currentText()
    result["default_iterations"] = dlg.iterations_spin.value()
    dlg.iterations_spin.setValue(2)
    dlg.tile_spin.setValue(128)
    dlg.batch_spin.setValue(2)
    dlg.device_combo.setCurrentText("cpu")
    result["name"] = dlg.name_edit.text()
    dlg.run_button.click()
    wait_for(lambda: dlg.runner is None, 400, "the training to finish")
    result["status"] = dlg.status_label.text()
    result["results"] = dlg.results_label.text()
    result["trained_model"] = dlg.trained_model
    pump(0.5)
    screenshot(dlg, "train_dialog.png")

    dlg.segment_button.click()
    seg = plugin().dialog
    wait_for(lambda: seg is not None and seg.isVisible(), 10, "the Segment dialog")
    result["segment_model"] = seg.model_combo.currentText()
    result["segment_layer"] = seg.layer_combo.currentLayer().name()
    seg.vector_check.setChecked(False)
    seg.run_button.click()
    wait_for(lambda: seg.runner is None, 300, "the segmentation to finish")
    result["segment_status"] = seg.status_label.text()
    result["result_labels"] = class_labels()
    dlg.hide()
    seg.hide()
    map_screenshot(raster, "train_map.png")
"""


@pytest.fixture
def labelled_project(qgis_app, tmp_path) -> Path:
    """A .qgz with the Potsdam sample and polygons traced from its labels, styled by categories of ``class``."""
    from qgis.core import QgsVectorLayer

    folder = tmp_path / "project"
    folder.mkdir()
    labels = QgsVectorLayer(polygons_from_raster(POTSDAM_LABELS, folder / "my_labels.gpkg"), "my labels", "ogr")
    assert labels.isValid()
    style_by_categories(labels, "class", ANALYST_STYLE, opacity=0.5)  # the analyst's own names and colours
    return write_project(folder, POTSDAM_RASTER, "potsdam_2_10", "labels.qgz", [labels])


def test_labels_layer_to_trained_model_to_segmented_layer(tmp_path, labelled_project) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server: run `make test-gui`")
    result = run_qgis(tmp_path, STEPS, project=labelled_project, timeout_s=900)
    assert result["field"] == "class"
    from qgis_plugin.model_catalog import START_MODEL_NAMES

    # the default start, as `training finetune` picks it with no --init (the general start model)
    assert result["start_model"] == START_MODEL_NAMES[0] and result["default_iterations"] == 300
    assert result["name"] == "potsdam_2_10_finetuned"
    assert result["status"].startswith("Done"), result["status"]
    model = Path(result["trained_model"])
    assert model.name == "potsdam_2_10_finetuned.rspmodel"
    assert model.parent.name == "rsp_models" and "qgis_profiles" in model.parts  # the profile's models folder
    for text in ("Hold-out accuracy", "OA", "kappa", "mIoU", "mF1", "Houses", "Roads and squares"):
        assert text in result["results"], text
    assert result["segment_model"] == "potsdam_2_10_finetuned"
    assert result["segment_layer"] == "potsdam_2_10"
    assert result["segment_status"].startswith("Done"), result["segment_status"]
    classes = [v for k, v in result["result_labels"].items() if k.endswith("classes")]
    assert classes == [[label for _value, label, _rgb in ANALYST_STYLE]], result["result_labels"]
    for shot in result["screenshots"]:
        assert not shot.startswith("FAILED") and os.path.getsize(shot) > 5_000, shot
