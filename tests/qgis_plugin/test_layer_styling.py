"""Result layers styled from model metadata: paletted raster, categorised polygons, greyscale confidence."""

from __future__ import annotations

import numpy as np
from osgeo import gdal, ogr, osr
from plugin_test_support import CLASS_COLORS, CLASS_NAMES
from qgis.core import QgsCategorizedSymbolRenderer, QgsPalettedRasterRenderer, QgsProject, QgsSingleBandGrayRenderer

from qgis_plugin.layer_styling import add_results_to_project


def _polygons(path, epsg=32633):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("polygons", srs, ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    for class_id in (1, 4):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", class_id)
        x = 500000 + 7 * class_id
        feature.SetGeometry(
            ogr.CreateGeometryFromWkt(f"POLYGON(({x} 5000000,{x + 7} 5000000,{x + 7} 5000030,{x} 5000000))")
        )
        layer.CreateFeature(feature)
    ds = None


def _confidence(path):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 10, 10, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((500000.0, 1.0, 0.0, 5000030.0, 0.0, -1.0))
    ds.GetRasterBand(1).WriteArray(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10))
    ds = None


def test_group_and_styles_from_model_metadata(qgis_new_project, class_raster, tmp_path) -> None:
    vector, confidence = tmp_path / "polys.gpkg", tmp_path / "conf.tif"
    _polygons(vector)
    _confidence(confidence)
    outputs = {"raster": str(class_raster), "vector": str(vector), "confidence": str(confidence)}
    group = add_results_to_project(outputs, CLASS_NAMES, CLASS_COLORS, "ortho", "potsdam_demo")
    assert group.name() == "ortho – potsdam_demo"
    layers = {node.layer().name(): node for node in group.findLayers()}
    assert set(layers) == {"ortho classes", "ortho polygons", "ortho confidence"}

    raster_renderer = layers["ortho classes"].layer().renderer()
    assert isinstance(raster_renderer, QgsPalettedRasterRenderer)
    classes = raster_renderer.classes()
    assert [c.value for c in classes] == list(range(6))
    assert [c.label for c in classes] == list(CLASS_NAMES)
    assert [c.color.getRgb()[:3] for c in classes] == list(CLASS_COLORS)

    vector_renderer = layers["ortho polygons"].layer().renderer()
    assert isinstance(vector_renderer, QgsCategorizedSymbolRenderer)
    assert vector_renderer.classAttribute() == "class_id"
    cats = vector_renderer.categories()
    assert [c.label() for c in cats] == list(CLASS_NAMES)
    assert [c.symbol().color().getRgb()[:3] for c in cats] == list(CLASS_COLORS)

    conf = layers["ortho confidence"]
    assert isinstance(conf.layer().renderer(), QgsSingleBandGrayRenderer)
    assert conf.layer().renderer().contrastEnhancement().maximumValue() == 1.0
    assert not conf.isVisible()
    assert len(QgsProject.instance().mapLayers()) == 3
    QgsProject.instance().removeAllMapLayers()
