"""Helpers of the fine-tuning tests: the bundled georeferenced Potsdam sample, polygons traced from its labels, and
class rasters on its labels' grid (also used by the plugin tests, through ``tests/qgis_plugin/plugin_test_support.py``).

The polygons are traced from the real label raster with GDAL (``gdal.Polygonize``), so rasterising them back onto
the raster's grid must give the label raster again: an expectation that does not come from the code under test.
"""

from __future__ import annotations

import os

import numpy as np
from osgeo import gdal, ogr, osr

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
RASTER = os.path.join(ROOT, "resources", "samples", "potsdam_2_10_rgb.tif")
LABELS_TIF = os.path.join(ROOT, "resources", "samples", "potsdam_2_10_labels.tif")
DEMO_MODEL = os.path.join(ROOT, "resources", "models", "demo_lite_potsdam.rspmodel")
NAMES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")

gdal.UseExceptions()


def polygons_from_raster(
    tif: str, gpkg: str, epsg: int | None = None, field: str = "class", rows: slice | None = None
) -> str:
    """Trace ``tif``'s classes into polygons with a string field ``field`` (class names), optionally reprojected.

    Args:
        rows: only trace these rows of the raster (the rest is left unlabelled).
    """
    src = gdal.Open(tif)
    data = src.GetRasterBand(1).ReadAsArray()
    if rows is not None:
        keep = np.zeros(data.shape, bool)
        keep[rows] = True
        data = np.where(keep, data, 255)
    mem = gdal.GetDriverByName("MEM").Create("", src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(src.GetGeoTransform())
    mem.SetProjection(src.GetProjection())
    mem.GetRasterBand(1).WriteArray(data)
    mem.GetRasterBand(1).SetNoDataValue(255)
    band = mem.GetRasterBand(1)
    tmp = ogr.GetDriverByName("Memory").CreateDataSource("t")
    srs = osr.SpatialReference(wkt=src.GetProjection())
    traced = tmp.CreateLayer("t", srs=srs, geom_type=ogr.wkbPolygon)
    traced.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), traced, 0)
    dst_srs = srs
    ct = None
    if epsg is not None:
        dst_srs = osr.SpatialReference()
        dst_srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        dst_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        ct = osr.CoordinateTransformation(srs, dst_srs)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg)
    layer = out.CreateLayer("labels", srs=dst_srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    for f in traced:
        g = f.GetGeometryRef().Clone()
        if ct is not None:
            g.Transform(ct)
        o = ogr.Feature(layer.GetLayerDefn())
        o.SetGeometry(g)
        o.SetField(field, NAMES[f.GetField("code")])
        o.SetField("code", f.GetField("code"))
        layer.CreateFeature(o)
    del layer, traced  # layers before their data sources (GDAL)
    out = tmp = None
    return gpkg


def label_array() -> np.ndarray:
    """The sample's label raster (0..4 classes, 255 unlabelled)."""
    ds = gdal.Open(LABELS_TIF)  # keep the dataset alive while its band is read
    return ds.GetRasterBand(1).ReadAsArray()


def class_raster(path, data, names=None):
    """A copy of the label raster's grid holding ``data`` (nodata 255), with category names when given."""
    src = gdal.Open(LABELS_TIF)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    band = ds.GetRasterBand(1)
    band.WriteArray(data)
    band.SetNoDataValue(255)
    if names:
        band.SetCategoryNames(list(names))
    band = ds = None  # band first, then the dataset: closing writes the file and its .aux.xml
    return str(path)
