"""Where to label next and Continue training in the Segment layer and Train model dialogs, headless (pytest-qgis
iface), with the real ``training suggest`` and ``training finetune`` in the engine interpreter.

The raster is the bundled Potsdam sample (512², EPSG:32633); the labels are polygons traced from its label raster,
top rows only (the rest is left for suggestions), reprojected to EPSG:3857 and held in a memory layer, so the
suggestions must come back in the labels' CRS and the memory layer must be written out for the command. Expected
squares and boxes are read back from the written GeoPackage with OGR, not from the plugin.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from osgeo import ogr
from plugin_test_support import DEMO_MODEL, POTSDAM_LABELS, POTSDAM_RASTER, polygons_from_raster, wait_until
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

import qgis_plugin.model_catalog as model_catalog
from qgis_plugin.train_results import format_metric

RUN_TIMEOUT_S = 300
TINY = {"iterations": 2, "tile": 128, "batch": 2}
COUNT, SIZE = 4, 64  # squares asked for, and their side in pixels
LABELS_EPSG = 3857


@pytest.fixture(scope="module")
def top_labels(tmp_path_factory) -> Path:
    """Polygons of the top 200 rows of the Potsdam labels, in EPSG:3857."""
    folder = tmp_path_factory.mktemp("traced")
    return Path(polygons_from_raster(POTSDAM_LABELS, folder / "top.gpkg", epsg=LABELS_EPSG, rows=slice(0, 200)))


@pytest.fixture(scope="module")
def more_labels(tmp_path_factory) -> Path:
    """What the analyst digitises next: rows 200-300 of the Potsdam labels, in EPSG:3857."""
    folder = tmp_path_factory.mktemp("traced_more")
    return Path(polygons_from_raster(POTSDAM_LABELS, folder / "more.gpkg", epsg=LABELS_EPSG, rows=slice(200, 300)))


@pytest.fixture
def models_dir(tmp_path, monkeypatch, venv_interpreter) -> Path:
    folder = tmp_path / "profile" / "rsp_models"
    monkeypatch.setattr(model_catalog, "user_models_dir", lambda: folder)
    monkeypatch.setattr(model_catalog, "bundled_models_dirs", lambda: [DEMO_MODEL.parent])
    return folder


@pytest.fixture
def raster(qgis_new_project, tmp_path, qgis_iface) -> QgsRasterLayer:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(POTSDAM_RASTER, data / "potsdam_2_10.tif")
    layer = QgsRasterLayer(str(data / "potsdam_2_10.tif"), "potsdam_2_10", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.resize(800, 600)
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(layer.extent())
    yield layer
    QgsProject.instance().removeAllMapLayers()


def features_of(path: Path, layer: QgsVectorLayer) -> list[QgsFeature]:
    """The polygons of ``path`` as features of ``layer`` (geometry and ``class``)."""
    source = QgsVectorLayer(str(path), "source", "ogr")
    assert source.isValid() and source.featureCount() > 0
    features = []
    for polygon in source.getFeatures():
        feature = QgsFeature(layer.fields())
        feature.setGeometry(polygon.geometry())
        feature["class"] = polygon["class"]
        features.append(feature)
    return features


def memory_labels(path: Path, name: str) -> QgsVectorLayer:
    """The polygons of ``path`` in a memory layer (not a file: the plugin must write it out for a subprocess)."""
    layer = QgsVectorLayer(f"Polygon?crs=EPSG:{LABELS_EPSG}&field=class:string", name, "memory")
    assert layer.dataProvider().addFeatures(features_of(path, layer))[0]
    return layer


def squares_on_disk(path: str) -> dict[int, QgsGeometry]:
    """rank → square, read with OGR from the GeoPackage the command wrote; also checks its fields."""
    ds = ogr.Open(path)
    layer = ds.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert {"rank", "uncertainty", "predicted"} <= set(names), names
    squares = {}
    for feature in layer:
        assert 0.0 <= feature.GetField("uncertainty") <= 1.0
        squares[feature.GetField("rank")] = QgsGeometry.fromWkt(feature.GetGeometryRef().ExportToWkt())
    return squares


def table_rows(text: str) -> dict[str, list[str]]:
    """The side-by-side table's rows: first cell → the other cells' texts (tags and spacing removed)."""
    table = text.split("<table", 2)[1]
    rows = {}
    for row in table.split("<tr>")[1:]:
        cells = [re.sub(r"<[^>]+>", "", c).replace("&nbsp;", " ").strip() for c in re.split(r"<t[dh][^>]*>", row)[1:]]
        rows[cells[0]] = cells[1:]
    return rows


def assert_canvas_on_square_one(canvas, path: str, layer_crs: QgsCoordinateReferenceSystem) -> None:
    """The canvas shows square 1 (read from ``path``) whole, centred."""
    to_canvas = QgsCoordinateTransform(layer_crs, canvas.mapSettings().destinationCrs(), QgsProject.instance())
    first = to_canvas.transformBoundingBox(squares_on_disk(path)[1].boundingBox())
    view = canvas.extent()
    assert view.contains(first), (view.toString(), first.toString())
    assert view.center().distance(first.center()) < 0.01 * first.width()
    assert view.width() < 4 * first.width() or view.height() < 4 * first.height()


def assert_suggestion_layer(layer: QgsVectorLayer, count: int) -> None:
    """On top of the layer tree, numbered outlines, ``count`` squares ranked 1..count."""
    assert QgsProject.instance().layerTreeRoot().children()[0].layer() is layer
    assert all(sl.brushStyle() == Qt.NoBrush for sl in layer.renderer().symbol().symbolLayers())
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"
    assert sorted(f["rank"] for f in layer.getFeatures()) == list(range(1, count + 1))


def test_segment_then_where_to_label_next(qgis_iface, models_dir, raster, tmp_path) -> None:
    from qgis_plugin.segment_dialog import SegmentDialog

    dlg = SegmentDialog(qgis_iface)
    try:
        dlg.layer_combo.setLayer(raster)
        dlg.model_combo.setCurrentIndex(dlg.model_combo.findData(str(DEMO_MODEL)))
        dlg.vector_check.setChecked(False)
        dlg.confidence_check.setChecked(False)
        assert not dlg.label_next.isVisibleTo(dlg)  # nothing to suggest from before a run
        assert dlg.run(), dlg.status_label.text()
        assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
        assert dlg.status_label.text().startswith("Done"), dlg.status_label.text()
        assert dlg.label_next.isVisibleTo(dlg) and dlg.label_next.suggest_button.isEnabled()
        dlg.label_next.count_spin.setValue(COUNT)
        dlg.label_next.size_spin.setValue(SIZE)

        layers = []
        for _round in range(2):
            assert dlg.where_to_label_next(), dlg.status_label.text()
            args = dlg.runner.args
            assert args[:5] == ["suggest", "--model", str(DEMO_MODEL), "--raster", raster.source()]
            assert "--labels" not in args and "--overwrite" not in args
            assert args[args.index("--count") + 1] == str(COUNT) and args[args.index("--size") + 1] == str(SIZE)
            assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
            layer = QgsProject.instance().layerTreeRoot().children()[0].layer()
            assert isinstance(layer, QgsVectorLayer) and "square 1" in dlg.status_label.text(), dlg.status_label.text()
            layers.append(layer)
        first, second = (Path(layer.source().split("|")[0]) for layer in layers)
        folder = Path(raster.source()).parent  # next to the run's outputs
        assert first == folder / "potsdam_2_10_demo_lite_potsdam_suggestions.gpkg"
        assert second == folder / "potsdam_2_10_demo_lite_potsdam_suggestions_2.gpkg"  # the first is kept
        assert first.is_file()
        assert_suggestion_layer(layers[1], COUNT)
        assert layers[1].crs() == raster.crs()  # no labels: the raster's CRS
        assert_canvas_on_square_one(qgis_iface.mapCanvas(), str(second), layers[1].crs())
        pixel = raster.rasterUnitsPerPixelX()
        squares = squares_on_disk(str(second))
        for rank, square in squares.items():
            box = square.boundingBox()
            assert box.width() == pytest.approx(SIZE * pixel) and box.height() == pytest.approx(SIZE * pixel), rank
            assert raster.extent().contains(box), rank
            assert not any(square.overlaps(other) for r, other in squares.items() if r != rank), rank
    finally:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()


def test_train_where_to_label_next_then_continue_training(
    qgis_iface, models_dir, raster, top_labels, more_labels
) -> None:
    from engine.model_file import read_model_info
    from qgis_plugin.train_dialog import TrainDialog

    labels = memory_labels(top_labels, "my labels")
    QgsProject.instance().addMapLayer(labels)
    dlg = TrainDialog(qgis_iface)
    try:
        dlg.raster_combo.setLayer(raster)
        dlg.labels_combo.setLayer(labels)
        dlg.field_combo.setField("class")
        dlg.iterations_spin.setValue(TINY["iterations"])
        dlg.tile_spin.setValue(TINY["tile"])
        dlg.batch_spin.setValue(TINY["batch"])
        dlg.device_combo.setCurrentText("cpu")
        assert dlg.run(), dlg.status_label.text()
        first_args = dlg.runner.args
        assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
        first_model = dlg.trained_model
        assert first_model == str(models_dir / "potsdam_2_10_finetuned.rspmodel"), dlg.status_label.text()
        assert dlg.label_next.isVisibleTo(dlg) and dlg.label_next.continue_button.isVisibleTo(dlg)

        # Where to label next: the new model, the raster, the labels written out (a memory layer) with their field.
        dlg.label_next.count_spin.setValue(COUNT)
        dlg.label_next.size_spin.setValue(SIZE)
        assert dlg.where_to_label_next(), dlg.status_label.text()
        args = dlg.runner.args
        assert args[:5] == ["suggest", "--model", first_model, "--raster", raster.source()]
        exported = args[args.index("--labels") + 1]
        assert exported != labels.source() and Path(exported).is_file()
        assert args[args.index("--class-field") + 1] == "class"
        assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
        layer = QgsProject.instance().layerTreeRoot().children()[0].layer()
        assert isinstance(layer, QgsVectorLayer) and "square 1" in dlg.status_label.text(), dlg.status_label.text()
        path = layer.source().split("|")[0]
        assert Path(path) == Path(first_model).with_name("potsdam_2_10_finetuned_finetune") / (
            "potsdam_2_10_suggestions.gpkg"
        )
        assert layer.crs().authid() == f"EPSG:{LABELS_EPSG}"  # the labels' CRS, not the raster's
        assert_suggestion_layer(layer, COUNT)
        assert_canvas_on_square_one(qgis_iface.mapCanvas(), path, layer.crs())
        label_shapes = [f.geometry() for f in labels.getFeatures()]
        for rank, square in squares_on_disk(path).items():  # the labels reached the command: squares avoid them
            assert not any(square.buffer(-0.01, 1).intersects(shape) for shape in label_shapes), rank

        # The analyst labels more, then Continue training: from the new model, the grown layer, the same options.
        assert labels.dataProvider().addFeatures(features_of(more_labels, labels))[0]
        total = labels.featureCount()
        assert dlg.continue_training(), dlg.status_label.text()
        second_args = dlg.runner.args
        second_model = str(models_dir / "potsdam_2_10_finetuned_2.rspmodel")
        assert second_args[second_args.index("--init") + 1] == first_model
        assert second_args[second_args.index("--output") + 1] == second_model
        labels_file = second_args[second_args.index("--labels") + 1]
        assert QgsVectorLayer(labels_file, "export", "ogr").featureCount() == total  # the grown layer
        same = ("--raster", "--class-field", "--iters", "--tile", "--batch-size", "--device")
        assert {k: second_args[second_args.index(k) + 1] for k in same} == {
            k: first_args[first_args.index(k) + 1] for k in same
        }
        assert wait_until(lambda: dlg.runner is None, RUN_TIMEOUT_S), dlg.status_label.text()
        assert dlg.trained_model == second_model, dlg.status_label.text()
        assert read_model_info(second_model).provenance["start"] == Path(first_model).name

        # Both models' hold-out figures side by side, as their model files record them.
        text = dlg.results_label.text()
        assert "previous: potsdam_2_10_finetuned<br>" in text and "new: potsdam_2_10_finetuned_2" in text
        old, new = read_model_info(first_model).metrics, read_model_info(second_model).metrics
        rows = table_rows(text)
        for key in ("OA", "kappa", "mIoU", "mF1"):
            assert rows[key][:2] == [format_metric(old[key]), format_metric(new[key])], (key, rows[key])
        assert len(rows["most frequent class"]) == 3 and rows["OA always answering it"][0] != ""
        assert dlg.continuation_name() == "potsdam_2_10_finetuned_3"  # the next round keeps the series
    finally:
        dlg.shutdown()
        dlg.close()
        dlg.deleteLater()


def test_nothing_to_suggest_from_before_a_run(qgis_iface, models_dir, raster) -> None:
    from qgis_plugin.train_dialog import TrainDialog

    dlg = TrainDialog(qgis_iface)
    try:
        assert not dlg.label_next.isVisibleTo(dlg)
        assert not dlg.where_to_label_next() and not dlg.continue_training()
        assert dlg.runner is None
    finally:
        dlg.close()
        dlg.deleteLater()
