"""The labelling loop in the real ``qgis`` application (Xvfb): a labels layer over the top of the Potsdam sample →
Train model (a tiny real fine-tune of the demo model) → **Where to label next** (the real ``training suggest``): a
numbered layer on top of the layer tree, in the labels' CRS, the map zoomed to square 1 → the analyst digitises more
→ **Continue training** from the new model → both models' hold-out figures side by side.

Screenshots (tests/artifacts/screenshots/): ``suggestions_map.png`` (the whole sample with the numbered squares over
the raster and the labels), ``suggestions_first.png`` (the map as the plugin leaves it: zoomed to square 1) and
``continue_training_dialog.png`` (the dialog after Continue training, the side-by-side table) and
``suggestions_labelled.png`` (the squares labelled); ``suggestions_map.png`` and ``continue_training_dialog.png`` are
copied to resources/screenshots/ for the README.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from plugin_test_support import ANALYST_STYLE, POTSDAM_LABELS, POTSDAM_RASTER, polygons_from_raster, style_by_categories
from real_qgis import SCREENSHOT_DIR, run_qgis, write_project

pytestmark = pytest.mark.gui

LABELS_EPSG = 3857
COUNT, SIZE = 6, 64

STEPS = f"""
def steps(result):
    from osgeo import ogr
    from qgis.core import QgsCoordinateTransform, QgsGeometry, QgsVectorLayer
    project = QgsProject.instance()
    raster = project.mapLayersByName("potsdam_2_10")[0]
    labels = project.mapLayersByName("my labels")[0]
    root = project.layerTreeRoot()
    node = root.findLayer(labels.id())
    root.insertChildNode(0, node.clone())  # the labels over the raster
    root.removeChildNode(node)
    canvas = iface.mapCanvas()
    canvas.setExtent(raster.extent())
    dlg = open_dialog("rspTrainModelAction", "train_dialog", 700, 40)
    dlg.raster_combo.setLayer(raster)
    dlg.labels_combo.setLayer(labels)
    dlg.iterations_spin.setValue(2)
    dlg.tile_spin.setValue(128)
    dlg.batch_spin.setValue(2)
    dlg.device_combo.setCurrentText("cpu")
    dlg.run_button.click()
    wait_for(lambda: dlg.runner is None, 400, "the training to finish")
    result["train_status"] = dlg.status_label.text()
    result["first_model"] = dlg.trained_model
    result["row_visible"] = dlg.label_next.isVisible()

    dlg.label_next.count_spin.setValue({COUNT})
    dlg.label_next.size_spin.setValue({SIZE})
    dlg.label_next.suggest_button.click()
    wait_for(lambda: dlg.runner is None, 300, "the suggestions")
    result["suggest_status"] = dlg.status_label.text()
    top = project.layerTreeRoot().children()[0].layer()
    result["top_layer"] = top.name()
    result["top_crs"] = top.crs().authid()
    result["top_source"] = top.source().split("|")[0]
    result["top_count"] = top.featureCount()
    result["labels_enabled"] = top.labelsEnabled()
    result["label_field"] = top.labeling().settings().fieldName
    ds = ogr.Open(result["top_source"])
    ranks = {{f.GetField("rank"): f.GetGeometryRef().ExportToWkt() for f in ds.GetLayer(0)}}
    ds = None
    first = QgsGeometry.fromWkt(ranks[1]).boundingBox()
    to_canvas = QgsCoordinateTransform(top.crs(), canvas.mapSettings().destinationCrs(), project)
    first = to_canvas.transformBoundingBox(first)
    view = canvas.extent()
    result["view_contains_first"] = view.contains(first)
    result["view_centre_offset"] = view.center().distance(first.center()) / first.width()
    result["view_to_square"] = min(view.width() / first.width(), view.height() / first.height())
    dlg.hide()
    iface.layerTreeView().setCurrentLayer(None)
    canvas.refresh()
    canvas.waitWhileRendering()
    pump(1.0)
    screenshot(iface.mainWindow(), "suggestions_first.png")
    map_screenshot(raster, "suggestions_map.png")

    # The analyst digitises in the squares (here: the reference labels inside them, an oracle), into the same layer.
    from qgis.core import QgsFeature, QgsWkbTypes
    reference = QgsVectorLayer(REFERENCE_LABELS, "reference", "ogr")
    squares = [QgsGeometry.fromWkt(wkt) for wkt in ranks.values()]
    labels.startEditing()
    added = 0
    for polygon in reference.getFeatures():
        for square in squares:
            piece = polygon.geometry().intersection(square)
            for part in piece.asGeometryCollection() if piece.isMultipart() else [piece]:
                if part.isEmpty() or part.type() != QgsWkbTypes.PolygonGeometry or part.area() <= 0:
                    continue
                feature = QgsFeature(labels.fields())
                feature.setGeometry(part)
                feature["class"] = polygon["class"]
                added += labels.addFeature(feature)
    result["committed"] = labels.commitChanges()
    result["added"] = added
    dlg.show()
    dlg.label_next.continue_button.click()
    result["second_args"] = list(dlg.runner.args) if dlg.runner is not None else []
    wait_for(lambda: dlg.runner is None, 400, "the continued training to finish")
    result["second_status"] = dlg.status_label.text()
    result["second_model"] = dlg.trained_model
    result["results"] = dlg.results_label.text()
    pump(0.5)
    screenshot(dlg, "continue_training_dialog.png")
    dlg.hide()
    map_screenshot(raster, "suggestions_labelled.png")
"""


@pytest.fixture
def labelled_project(qgis_app, tmp_path) -> tuple[Path, Path]:
    """A .qgz with the Potsdam sample and polygons of the top 200 rows of its labels (EPSG:3857, a GeoPackage),
    styled by categories of ``class``; and the polygons of all its labels (the reference the analyst labels from)."""
    from qgis.core import QgsVectorLayer

    folder = tmp_path / "project"
    folder.mkdir()
    traced = polygons_from_raster(POTSDAM_LABELS, folder / "my_labels.gpkg", epsg=LABELS_EPSG, rows=slice(0, 200))
    labels = QgsVectorLayer(traced, "my labels", "ogr")
    assert labels.isValid()
    style_by_categories(labels, "class", ANALYST_STYLE, opacity=0.5)
    reference = Path(polygons_from_raster(POTSDAM_LABELS, tmp_path / "reference.gpkg", epsg=LABELS_EPSG))
    return write_project(folder, POTSDAM_RASTER, "potsdam_2_10", "labels.qgz", [labels]), reference


def test_where_to_label_next_then_continue_training(tmp_path, labelled_project) -> None:
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X server: run `make test-gui`")
    project, reference = labelled_project
    steps = f"REFERENCE_LABELS = {str(reference)!r}\n{STEPS}"
    result = run_qgis(tmp_path, steps, project=project, timeout_s=1200)
    assert result["train_status"].startswith("Done"), result["train_status"]
    assert result["row_visible"]
    first = Path(result["first_model"])
    assert "square 1" in result["suggest_status"], result["suggest_status"]
    assert result["top_layer"] == "Where to label next – potsdam_2_10"
    assert result["top_crs"] == f"EPSG:{LABELS_EPSG}"  # the labels' CRS
    assert Path(result["top_source"]).parent == first.with_name(first.stem + "_finetune")
    assert result["top_count"] == COUNT
    assert result["labels_enabled"] and result["label_field"] == "rank"
    assert result["view_contains_first"] and result["view_centre_offset"] < 0.01 and result["view_to_square"] < 4
    assert result["committed"] and result["added"] > 0
    args = result["second_args"]
    assert args[args.index("--init") + 1] == str(first)
    assert result["second_status"].startswith("Done"), result["second_status"]
    assert Path(result["second_model"]).name == f"{first.stem}_2.rspmodel"
    assert f"previous: {first.stem}<br>" in result["results"] and f"new: {first.stem}_2" in result["results"]
    for shot in (
        "suggestions_first.png",
        "suggestions_map.png",
        "continue_training_dialog.png",
        "suggestions_labelled.png",
    ):
        path = SCREENSHOT_DIR / shot
        assert path.is_file() and path.stat().st_size > 5_000, shot
