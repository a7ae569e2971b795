"""Processing "Where to label next" through ``processing.run``, with the real ``training suggest``; and the labelling
loop in Processing: fine-tune, suggest, fine-tune again from the earlier model (``MODEL`` → ``--init``).

The squares are read back with OGR; their expected size and place come from the raster's own geotransform.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import gdal, ogr
from plugin_test_support import DEMO_MODEL, POTSDAM_LABELS, POTSDAM_RASTER, polygons_from_raster
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsProcessingFeatureSourceDefinition,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from qgis_plugin.model_catalog import bundled_start_model

TINY = 256  # pixels: the raster is the top-left 256² of the Potsdam sample


@pytest.fixture
def tiny_raster(tmp_path) -> str:
    path = str(tmp_path / "tiny.tif")
    gdal.Translate(path, str(POTSDAM_RASTER), srcWin=[0, 0, TINY, TINY])
    return path


def squares(path: str) -> tuple[dict[int, QgsGeometry], str]:
    """rank → square, and the layer's CRS as WKT, read with OGR."""
    ds = ogr.Open(path)
    layer = ds.GetLayer(0)
    found = {f.GetField("rank"): QgsGeometry.fromWkt(f.GetGeometryRef().ExportToWkt()) for f in layer}
    return found, layer.GetSpatialRef().ExportToWkt()


def raster_box(path: str) -> tuple[QgsRectangle, float]:
    """The raster's extent and pixel size, from its geotransform."""
    ds = gdal.Open(path)
    x0, dx, _, y0, _, dy = ds.GetGeoTransform()
    return QgsRectangle(x0, y0 + dy * ds.RasterYSize, x0 + dx * ds.RasterXSize, y0), dx


def test_algorithm_is_registered(provider) -> None:
    algorithm = QgsApplication.processingRegistry().algorithmById("rspsegmentation:suggest")
    assert algorithm.displayName() == "Where to label next"
    assert {p.name() for p in algorithm.parameterDefinitions()} >= {"INPUT", "MODEL", "LABELS", "CLASS_FIELD", "COUNT"}


def test_squares_without_labels_in_the_raster_crs(provider, tiny_raster, tmp_path) -> None:
    import processing

    out = tmp_path / "next.gpkg"
    result = processing.run(
        "rspsegmentation:suggest",
        {"INPUT": tiny_raster, "MODEL": str(DEMO_MODEL), "COUNT": 3, "SIZE": 64, "OUTPUT": str(out)},
    )
    assert result["OUTPUT"] == str(out) and result["SQUARES"] == 3
    found, wkt = squares(str(out))
    assert sorted(found) == [1, 2, 3]
    assert "UTM zone 33N" in wkt
    extent, pixel = raster_box(tiny_raster)
    for rank, square in found.items():
        box = square.boundingBox()
        assert box.width() == pytest.approx(64 * pixel) and box.height() == pytest.approx(64 * pixel), rank
        assert extent.contains(box), rank


def test_squares_avoid_the_labels_and_come_in_their_crs(provider, tiny_raster, tmp_path) -> None:
    import processing

    extent, _pixel = raster_box(tiny_raster)
    to_labels = QgsCoordinateTransform(
        QgsCoordinateReferenceSystem("EPSG:32633"), QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance()
    )
    left = QgsGeometry.fromRect(
        QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.yMaximum())
    )
    top = QgsGeometry.fromRect(
        QgsRectangle(extent.center().x(), extent.yMaximum() - 1, extent.xMaximum(), extent.yMaximum())
    )
    labels = QgsVectorLayer("Polygon?crs=EPSG:3857&field=class:string", "labels", "memory")
    for shape, name in ((left, "building"), (top, "tree")):
        shape.transform(to_labels)
        feature = QgsFeature(labels.fields())
        feature.setGeometry(shape)
        feature["class"] = name
        labels.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(labels)
    labels.selectByIds([min(labels.allFeatureIds())])  # only the left half is passed on
    out = tmp_path / "next.gpkg"
    result = processing.run(
        "rspsegmentation:suggest",
        {
            "INPUT": tiny_raster,
            "MODEL": str(DEMO_MODEL),
            "LABELS": QgsProcessingFeatureSourceDefinition(labels.id(), selectedFeaturesOnly=True),
            "CLASS_FIELD": "class",
            "COUNT": 2,
            "SIZE": 64,
            "OUTPUT": str(out),
        },
    )
    assert QgsVectorLayer(str(out), "out", "ogr").crs().authid() == "EPSG:3857"  # the labels' CRS
    found, _wkt = squares(str(out))
    assert result["SQUARES"] == len(found) == 2
    for rank, square in found.items():
        assert not square.buffer(-0.01, 1).intersects(left), rank


def test_loaded_result_is_styled(provider, tiny_raster) -> None:
    import processing

    result = processing.runAndLoadResults(
        "rspsegmentation:suggest",
        {"INPUT": tiny_raster, "MODEL": str(DEMO_MODEL), "COUNT": 2, "SIZE": 64, "OUTPUT": "TEMPORARY_OUTPUT"},
    )
    layer = QgsProject.instance().mapLayer(result["OUTPUT"]) or next(
        iter(QgsProject.instance().mapLayersByName("Where to label next")), None
    )
    assert isinstance(layer, QgsVectorLayer), result
    assert all(sl.brushStyle() == Qt.NoBrush for sl in layer.renderer().symbol().symbolLayers())
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "rank"


def test_the_loop_in_processing_starts_again_from_the_earlier_model(provider, tmp_path) -> None:
    import processing

    from engine.model_file import read_model_info

    labels = polygons_from_raster(POTSDAM_LABELS, tmp_path / "labels.gpkg", rows=slice(0, 256))
    tiny = {"ITERATIONS": 2, "BATCH_SIZE": 2, "TILE": 128, "DEVICE": 0}
    common = {"INPUT": str(POTSDAM_RASTER), "LABELS": labels, "CLASS_FIELD": "class", **tiny}
    first = Path(
        processing.run("rspsegmentation:finetune", {**common, "OUTPUT": str(tmp_path / "a.rspmodel")})["OUTPUT"]
    )
    suggested = processing.run(
        "rspsegmentation:suggest",
        {"INPUT": str(POTSDAM_RASTER), "MODEL": str(first), "LABELS": labels, "CLASS_FIELD": "class", "COUNT": 2,
         "SIZE": 64, "OUTPUT": str(tmp_path / "next.gpkg")},
    )  # fmt: skip
    assert suggested["SQUARES"] == 2
    more = polygons_from_raster(POTSDAM_LABELS, tmp_path / "more.gpkg", rows=slice(0, 384))  # the grown labels
    second = processing.run(
        "rspsegmentation:finetune",
        {**common, "LABELS": more, "MODEL": str(first), "OUTPUT": str(tmp_path / "b.rspmodel")},
    )
    info = read_model_info(second["OUTPUT"])
    assert info.provenance["start"] == first.name  # --init the earlier model
    assert read_model_info(first).provenance["start"] == Path(bundled_start_model()).name
