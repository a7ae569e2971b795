"""The suggestions layer (:mod:`qgis_plugin.suggestion_layer`): style, place in the layer tree, zoom to square 1.

The squares are written here with OGR (EPSG:32633, ranks stored out of order), so the expected boxes are this test's
own coordinates, not something the code under test computed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from osgeo import ogr, osr
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRectangle,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import Qt

from qgis_plugin.layer_styling import StylingError
from qgis_plugin.suggestion_layer import add_suggestions_to_project, load_suggestions, zoom_to_first

# (rank, xmin, ymin, size): square 1 is the second feature, far from the others.
SQUARES = [(2, 500000.0, 5000000.0, 20.0), (1, 500400.0, 5000300.0, 20.0), (3, 500040.0, 5000000.0, 20.0)]


def write_squares(path: Path, epsg: int = 32633, with_rank: bool = True) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("suggestions", srs=srs, geom_type=ogr.wkbPolygon)
    for name, kind in (("rank" if with_rank else "order", ogr.OFTInteger), ("uncertainty", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    layer.CreateField(ogr.FieldDefn("predicted", ogr.OFTString))
    for rank, x, y, size in SQUARES:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField(0, rank)
        feature.SetField(1, 1.0 / rank)
        feature.SetField(2, "tree")
        ring = f"{x} {y}, {x + size} {y}, {x + size} {y + size}, {x} {y + size}, {x} {y}"
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON (({ring}))"))
        layer.CreateFeature(feature)
    ds = None
    return str(path)


@pytest.fixture
def project(qgis_new_project):
    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


def test_numbered_outlines(tmp_path) -> None:
    layer = load_suggestions(write_squares(tmp_path / "s.gpkg"), "next")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsSingleSymbolRenderer)
    symbol_layers = renderer.symbol().symbolLayers()
    assert symbol_layers and all(sl.brushStyle() == Qt.NoBrush for sl in symbol_layers)  # no fill
    assert max(sl.strokeWidth() for sl in symbol_layers) >= 0.6 and all(
        sl.strokeStyle() == Qt.SolidLine for sl in symbol_layers
    )  # a bold outline (mm)
    assert layer.labelsEnabled()
    settings = layer.labeling().settings()
    assert settings.fieldName == "rank" and not settings.isExpression
    assert settings.format().font().bold() and settings.format().buffer().enabled()
    assert "rank" in layer.displayExpression() and "uncertainty" in layer.displayExpression()


def test_a_file_without_ranks_is_refused(tmp_path) -> None:
    with pytest.raises(StylingError, match="rank"):
        load_suggestions(write_squares(tmp_path / "s.gpkg", with_rank=False), "next")
    with pytest.raises(StylingError, match="cannot open"):
        load_suggestions(str(tmp_path / "missing.gpkg"), "next")


def test_added_on_top_of_the_layer_tree_in_the_file_crs(project, tmp_path) -> None:
    other = QgsVectorLayer("Polygon?crs=EPSG:4326", "labels", "memory")
    project.addMapLayer(other)
    layer = add_suggestions_to_project(write_squares(tmp_path / "s.gpkg", epsg=3857), "Where to label next", project)
    top = project.layerTreeRoot().children()[0]
    assert top.layer() is layer and layer.name() == "Where to label next"
    assert layer.crs().authid() == "EPSG:3857"
    assert [n.layer() for n in project.layerTreeRoot().findLayers()] == [layer, other]


@pytest.mark.parametrize("canvas_epsg", [32633, 3857])
def test_zoom_centres_on_square_one(project, tmp_path, qgis_canvas, canvas_epsg) -> None:
    layer = add_suggestions_to_project(write_squares(tmp_path / "s.gpkg"), "next", project)
    qgis_canvas.resize(600, 400)
    canvas_crs = QgsCoordinateReferenceSystem(f"EPSG:{canvas_epsg}")
    qgis_canvas.setDestinationCrs(canvas_crs)
    to_canvas = QgsCoordinateTransform(layer.crs(), canvas_crs, project)
    _rank, x, y, size = next(s for s in SQUARES if s[0] == 1)
    expected = to_canvas.transformBoundingBox(QgsRectangle(x, y, x + size, y + size))
    box = zoom_to_first(qgis_canvas, layer)
    assert box.toString(3) == expected.toString(3)
    view = qgis_canvas.extent()
    assert view.contains(expected)
    assert view.center().distance(expected.center()) < 0.01 * expected.width()
    assert view.width() < 4 * expected.width() or view.height() < 4 * expected.height()  # zoomed in on it
    for other_rank, ox, oy, osize in SQUARES:
        if other_rank != 1:
            square = to_canvas.transformBoundingBox(QgsRectangle(ox, oy, ox + osize, oy + osize))
            assert not view.intersects(square), other_rank
