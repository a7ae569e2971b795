"""Layer adapters (qgis_plugin.layer_inputs): raster file paths, extents clipped to a layer, features to GeoPackage."""

from __future__ import annotations

import pytest
from osgeo import ogr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)

from qgis_plugin.layer_inputs import (
    LayerExportError,
    bbox_within_layer,
    export_features,
    layer_file_path,
    vector_file_path,
    vector_layer_source,
)


@pytest.fixture
def squares(qgis_new_project) -> QgsVectorLayer:
    """A memory layer of three unit squares (EPSG:32615) with a ``class`` attribute."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32615&field=class:integer", "labels", "memory")
    features = []
    for i in range(3):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({i} 0,{i + 1} 0,{i + 1} 1,{i} 1,{i} 0))"))
        feature["class"] = i + 1
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    yield layer
    QgsProject.instance().removeAllMapLayers()


def _features(path: str) -> tuple[int, str, list[int]]:
    dataset = ogr.Open(path)
    assert dataset is not None and dataset.GetLayerCount() == 1
    layer = dataset.GetLayer(0)
    return layer.GetFeatureCount(), layer.GetSpatialRef().GetAuthorityCode(None), [f["class"] for f in layer]


def test_layer_file_path(qgis_new_project, sample_raster, squares) -> None:
    raster = QgsRasterLayer(str(sample_raster), "ortho", "gdal")
    assert layer_file_path(raster) == str(sample_raster)
    assert layer_file_path(squares) == ""
    assert layer_file_path(None) == ""
    del raster


def test_bbox_within_layer_clips_and_rejects_disjoint(qgis_new_project, sample_raster) -> None:
    raster = QgsRasterLayer(str(sample_raster), "ortho", "gdal")
    extent = raster.extent()
    wider = QgsRectangle(extent.xMinimum() - 100, extent.yMinimum() + 1, extent.center().x(), extent.yMaximum() + 100)
    assert bbox_within_layer(wider, raster) == pytest.approx(
        (extent.xMinimum(), extent.yMinimum() + 1, extent.center().x(), extent.yMaximum())
    )
    far = QgsRectangle(extent.xMaximum() + 10, extent.yMaximum() + 10, extent.xMaximum() + 20, extent.yMaximum() + 20)
    assert bbox_within_layer(far, raster) is None
    del raster


def test_memory_layer_is_exported_with_attributes(squares, tmp_path) -> None:
    path = vector_layer_source(squares, folder=str(tmp_path))
    assert path == str(tmp_path / "labels.gpkg")
    assert _features(path) == (3, "32615", [1, 2, 3])


def test_selected_features_only(squares, tmp_path) -> None:
    with pytest.raises(LayerExportError, match="selected"):
        vector_layer_source(squares, selected_only=True, folder=str(tmp_path))
    squares.selectByExpression('"class" = 2')
    assert _features(vector_layer_source(squares, selected_only=True, folder=str(tmp_path))) == (1, "32615", [2])


def test_export_reprojects_and_defaults_to_a_temporary_folder(squares) -> None:
    path = export_features(squares, crs=QgsCoordinateReferenceSystem("EPSG:4326"))
    count, code, _classes = _features(path)
    assert (count, code) == (3, "4326")


def test_single_layer_file_is_used_as_is_and_filtered_or_multi_layer_is_exported(squares, tmp_path) -> None:
    single = export_features(squares, folder=str(tmp_path), name="single.gpkg")
    file_layer = QgsVectorLayer(single, "single", "ogr")
    assert file_layer.isValid()
    assert vector_file_path(file_layer) == single
    assert vector_layer_source(file_layer, folder=str(tmp_path / "unused")) == single
    file_layer.setSubsetString('"class" = 3')
    assert vector_file_path(file_layer) == ""
    out = tmp_path / "filtered"
    out.mkdir()
    assert _features(vector_layer_source(file_layer, folder=str(out)))[2] == [3]

    multi = str(tmp_path / "multi.gpkg")
    source = ogr.Open(single)
    target = ogr.GetDriverByName("GPKG").CreateDataSource(multi)
    for name in ("first", "second"):
        target.CopyLayer(source.GetLayer(0), name)
    target = source = None  # close both files
    second = QgsVectorLayer(f"{multi}|layername=second", "second", "ogr")
    assert second.isValid()
    assert vector_file_path(second) == ""  # the file holds two layers: the export holds only this one
    out = tmp_path / "multi"
    out.mkdir()
    assert _features(vector_layer_source(second, folder=str(out)))[0] == 3
    del file_layer, second


def test_categorized_classes_follow_the_style_on_the_class_field(squares) -> None:
    from qgis.core import NULL, QgsCategorizedSymbolRenderer, QgsRendererCategory, QgsSymbol, QgsWkbTypes
    from qgis.PyQt.QtGui import QColor

    from qgis_plugin.layer_inputs import categorized_classes

    def category(value, label, rgb):
        symbol = QgsSymbol.defaultSymbol(QgsWkbTypes.PolygonGeometry)
        symbol.setColor(QColor(*rgb))
        return QgsRendererCategory(value, symbol, label)

    assert categorized_classes(squares, "class") is None  # a single-symbol style: the field's values decide
    squares.setRenderer(
        QgsCategorizedSymbolRenderer(
            "class",
            [
                category(3, "roofs", (200, 0, 0)),
                category(1, "", (0, 150, 0)),  # no label: the value names the class
                category(NULL, "all other values", (0, 0, 0)),
            ],
        )
    )
    assert categorized_classes(squares, "class") == [("roofs", (200, 0, 0), 3), ("1", (0, 150, 0), 1)]
    assert categorized_classes(squares, "other_field") is None
    assert categorized_classes(None, "class") is None
