"""The Segment layer dialog, headless (pytest-qgis iface): defaults, validation, parameters from widgets."""

from __future__ import annotations

import os
import shutil

import pytest
from plugin_test_support import ROOT
from qgis.core import QgsProject, QgsRasterLayer

import qgis_plugin.model_catalog as model_catalog
from qgis_plugin.parameters import ExtentMode, InvalidParametersError


@pytest.fixture
def models_dir(tmp_path, metadata_model, monkeypatch):
    folder = tmp_path / "profile_models"
    folder.mkdir()
    shutil.copy(metadata_model, folder / metadata_model.name)
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: folder)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [])
    return folder


@pytest.fixture
def dialog(qgis_iface, qgis_new_project, models_dir, sample_raster):
    from qgis_plugin.segment_dialog import SegmentDialog

    layer = QgsRasterLayer(str(sample_raster), "ortho", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    dlg = SegmentDialog(qgis_iface)
    dlg.layer_combo.setLayer(layer)
    dlg.overwrite_check.setChecked(False)
    dlg.vector_check.setChecked(True)
    dlg.confidence_check.setChecked(False)
    dlg.extent_combo.setCurrentIndex(dlg.extent_combo.findData(ExtentMode.WHOLE_LAYER.value))
    yield dlg
    dlg.close()
    dlg.deleteLater()
    QgsProject.instance().removeAllMapLayers()


def test_defaults_next_to_input_with_model_metadata(dialog, sample_raster) -> None:
    folder = sample_raster.parent
    assert dialog.model_combo.currentText() == "potsdam_demo"
    assert dialog.raster_out.filePath() == str(folder / "ortho_potsdam_demo_classes.tif")
    assert dialog.vector_out.filePath() == str(folder / "ortho_potsdam_demo_polygons.gpkg")
    assert dialog.bands_edit.text() == "1,2,3"  # RGBA ortho: red, green, blue by colour interpretation
    html = dialog.model_info.text()
    for name in ("impervious", "building", "low_vegetation", "tree", "car", "clutter"):
        assert name in html
    assert "rgb(0,0,255)" in html  # building swatch
    assert "0.5 m/px" in html and "tile 64 px" in html


def test_parameters_from_widgets(dialog, sample_raster, metadata_model) -> None:
    dialog.batch_spin.setValue(7)
    dialog.min_area_spin.setValue(12.5)
    dialog.simplify_spin.setValue(0.5)
    dialog.bands_edit.setText("3, 2, 1")
    params = dialog.gather_parameters()
    assert params.problems() == []
    args = params.engine_args()
    assert args[:2] == ["predict", "--model"]
    assert args[args.index("--input") + 1] == str(sample_raster)
    assert args[args.index("--bands") + 1] == "3,2,1"
    assert args[args.index("--batch-size") + 1] == "7"
    assert args[args.index("--min-area") + 1] == "12.5"
    assert args[args.index("--simplify") + 1] == "0.5"
    assert "--confidence" not in args and "--overwrite" not in args and "--bbox" not in args


def test_validation_messages(dialog, sample_raster) -> None:
    existing = sample_raster.parent / "ortho_potsdam_demo_classes.tif"
    existing.write_bytes(b"old result")
    problems = dialog.gather_parameters().problems()
    assert any("exists" in p and "Overwrite" in p for p in problems)
    dialog.overwrite_check.setChecked(True)
    assert dialog.gather_parameters().problems() == []
    dialog.raster_out.setFilePath(str(sample_raster))
    assert any("equals the input" in p for p in dialog.gather_parameters().problems())
    dialog.raster_out.setFilePath(str(sample_raster.parent / "no_such_dir" / "x.tif"))
    assert any("does not exist" in p for p in dialog.gather_parameters().problems())
    dialog.bands_edit.setText("red")
    with pytest.raises(InvalidParametersError):
        dialog.gather_parameters()
    assert dialog.run() is False
    assert dialog.runner is None


def test_canvas_extent_is_clipped_to_layer_in_layer_crs(dialog, qgis_canvas) -> None:
    layer = dialog.layer_combo.currentLayer()
    qgis_canvas.setDestinationCrs(layer.crs())
    extent = layer.extent()
    qgis_canvas.setExtent(extent)
    dialog.extent_combo.setCurrentIndex(dialog.extent_combo.findData(ExtentMode.CANVAS.value))
    params = dialog.gather_parameters()
    xmin, ymin, xmax, ymax = params.bbox
    assert extent.xMinimum() - 1e-6 <= xmin < xmax <= extent.xMaximum() + 1e-6
    assert extent.yMinimum() - 1e-6 <= ymin < ymax <= extent.yMaximum() + 1e-6
    assert "--bbox" in params.engine_args()


def test_no_model_installed(qgis_iface, qgis_new_project, tmp_path, monkeypatch) -> None:
    from qgis_plugin.segment_dialog import SegmentDialog

    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: tmp_path / "none")
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [])
    dlg = SegmentDialog(qgis_iface)
    assert dlg.model_combo.count() == 0
    assert "No model installed" in dlg.model_info.text()
    assert any("Choose a model" in p for p in dlg.gather_parameters().problems())


def test_polygon_extent_exports_mask_in_raster_crs(dialog) -> None:
    from osgeo import ogr
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    raster = dialog.layer_combo.currentLayer()
    extent = raster.extent()
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "aoi", "memory")
    # Two polygons given in EPSG:4326 around the raster's centre; only the selected one must be exported.
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject

    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    centre = to_wgs84.transform(extent.center())
    features = []
    for dx in (0.0, 0.0002):
        feature = QgsFeature()
        feature.setGeometry(
            QgsGeometry.fromWkt(
                f"POLYGON(({centre.x() + dx} {centre.y()},{centre.x() + dx + 0.0001} {centre.y()},"
                f"{centre.x() + dx + 0.0001} {centre.y() + 0.0001},{centre.x() + dx} {centre.y()}))"
            )
        )
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(polygons)
    dialog.mask_combo.setLayer(polygons)
    dialog.extent_combo.setCurrentIndex(dialog.extent_combo.findData(ExtentMode.SELECTED_FEATURES.value))
    assert any("polygon layer" in p for p in dialog.gather_parameters().problems())  # nothing selected yet
    polygons.selectByIds([polygons.allFeatureIds()[0]])
    params = dialog.gather_parameters()
    assert params.problems() == []
    assert params.engine_args()[params.engine_args().index("--mask") + 1] == params.mask_path
    ds = ogr.Open(params.mask_path)
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == 1
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32615"  # the raster's CRS, not the layer's
    env = layer.GetExtent()  # (xmin, xmax, ymin, ymax) in metres
    assert extent.xMinimum() <= env[0] <= extent.xMaximum() and extent.yMinimum() <= env[2] <= extent.yMaximum()


def test_engine_failure_shows_message_and_keeps_nothing(dialog, monkeypatch, tmp_path, qgis_iface) -> None:
    from plugin_test_support import wait_until

    import qgis_plugin.plugin_settings as plugin_settings

    crash = tmp_path / "crashing_python"
    crash.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nkill -SEGV $$\n")
    crash.chmod(0o755)
    monkeypatch.setattr(plugin_settings, "interpreter", lambda: str(crash))
    messages: list[str] = []
    monkeypatch.setattr(qgis_iface.messageBar(), "pushMessage", lambda title, text, *a, **k: messages.append(text))
    assert dialog.run() is True
    assert wait_until(lambda: dialog.runner is None, 30)
    assert messages and "crashed" in messages[0]
    assert "crashed" in dialog.status_label.text()
    assert not any(os.path.exists(p) for p in (dialog.raster_out.filePath(), dialog.vector_out.filePath()))
    assert dialog.run_button.isEnabled() and not dialog.cancel_button.isEnabled()


def test_cuda_choice_follows_the_environment_check(dialog) -> None:
    dialog.device_combo.setCurrentText("cuda")
    dialog._apply_cuda_availability(False)
    assert dialog.device_combo.currentText() == "cpu"
    assert not dialog.device_combo.model().item(1).isEnabled()
    dialog._apply_cuda_availability("true")  # QgsSettings may hand back a string
    assert dialog.device_combo.model().item(1).isEnabled()


def test_every_class_swatch_is_drawn(dialog, qgis_app) -> None:
    """The model box is rendered with all classes visible (a word-wrapped table once showed only the first)."""
    dialog.resize(540, 660)  # as narrow as the real application opens it
    dialog.show()
    qgis_app.processEvents()
    image = dialog.model_info.grab().toImage()
    seen = {image.pixelColor(x, y).getRgb()[:3] for x in range(0, image.width(), 2) for y in range(image.height())}
    for color in ((0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)):  # Potsdam classes 1..5
        assert color in seen, color


def test_long_model_description_is_not_clipped(dialog, qgis_app, models_dir) -> None:
    """The bundled demo model's long description once pushed the classes out of the word-wrapped model box."""
    shutil.copy(ROOT / "resources" / "models" / "demo_lite_potsdam.rspmodel", models_dir)
    dialog.refresh()
    index = dialog.model_combo.findText("demo_lite_potsdam")
    assert index >= 0
    dialog.model_combo.setCurrentIndex(index)
    dialog.resize(dialog.minimumWidth(), 600)
    dialog.show()
    qgis_app.processEvents()
    label = dialog.model_info
    assert label.height() >= label.heightForWidth(label.width())  # all of its text fits in the space it was given
    image = label.grab().toImage()
    seen = {image.pixelColor(x, y).getRgb()[:3] for x in range(0, image.width(), 2) for y in range(image.height())}
    for color in ((0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0)):  # building, low veg., tree, car
        assert color in seen, color


def test_precision_is_an_advanced_choice_passed_to_the_engine(dialog) -> None:
    assert dialog.findChild(object, "advancedGroup").isCollapsed()  # advanced: out of the way by default
    combo = dialog.precision_combo
    assert [combo.itemData(i) for i in range(combo.count())] == ["auto", "fp32", "bf16"]
    assert combo.currentData() == "auto"
    assert "--precision" not in dialog.gather_parameters().engine_args()  # auto is the engine's default
    combo.setCurrentIndex(combo.findData("fp32"))
    args = dialog.gather_parameters().engine_args()
    assert args[args.index("--precision") + 1] == "fp32"


def test_gsd_choice_shows_the_resampling_and_reaches_the_engine(dialog) -> None:
    assert dialog.gsd_combo.currentData() == "model" and not dialog.gsd_spin.isEnabled()
    assert "(within 5 % of the model's GSD, 0.5 m)" in dialog.gsd_info.text()
    assert "resampling factor 1" in dialog.gsd_info.text()  # the 0.5 m ortho at the model's 0.5 m
    assert "--gsd" not in dialog.gather_parameters().engine_args()  # the engine's default
    dialog.gsd_combo.setCurrentIndex(dialog.gsd_combo.findData("metres"))
    dialog.gsd_spin.setValue(2.0)
    assert dialog.gsd_spin.isEnabled()
    assert "Reads at 2 m/px (chosen); layer pixels 0.5 m: resampling factor 4" in dialog.gsd_info.text()
    args = dialog.gather_parameters().engine_args()
    assert args[args.index("--gsd") + 1] == "2"
    dialog.gsd_combo.setCurrentIndex(dialog.gsd_combo.findData("native"))
    args = dialog.gather_parameters().engine_args()
    assert args[args.index("--gsd") + 1] == "native" and "resampling factor 1" in dialog.gsd_info.text()
