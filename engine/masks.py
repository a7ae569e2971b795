"""Polygons from vector files on a raster's grid: reprojection, window rasters, and the ``--mask`` polygon mask.

:func:`polygon_features` and :func:`window_grid` are shared with training's label rasterisation
(:mod:`training.finetune.labels`), so masks and labels follow one rasterisation rule (pixel centre inside).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from osgeo import gdal, ogr, osr

from engine.errors import ParameterError
from engine.georef import get_srs, window_geotransform
from engine.tiling import Window

gdal.UseExceptions()
ogr.UseExceptions()


def polygon_features(
    layer: ogr.Layer, dst_srs: osr.SpatialReference | None
) -> Iterator[tuple[ogr.Feature, ogr.Geometry]]:
    """``(feature, polygon geometry in dst_srs)`` for each polygon feature of ``layer``; other geometries skipped.

    The geometry is a reprojected copy (the layer's own CRS to ``dst_srs``; unchanged when either is unknown or they
    are the same).
    """
    lsrs = layer.GetSpatialRef()
    ct = None
    if lsrs is not None and dst_srs is not None:
        lsrs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not lsrs.IsSame(dst_srs):
            ct = osr.CoordinateTransformation(lsrs, dst_srs)
    layer.ResetReading()
    for feat in layer:
        geom = feat.GetGeometryRef()
        if geom is None or ogr.GT_Flatten(geom.GetGeometryType()) not in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
            continue
        geom = geom.Clone()
        if ct is not None:
            geom.Transform(ct)
        yield feat, geom


def window_grid(raster: gdal.Dataset, win: Window, dtype: int, fill: float) -> gdal.Dataset:
    """An in-memory one-band raster on ``raster``'s grid covering ``win``, filled with ``fill``."""
    mem = gdal.GetDriverByName("MEM").Create("", win.width, win.height, 1, dtype)
    mem.SetGeoTransform(window_geotransform(raster, win))
    if raster.GetProjection():
        mem.SetProjection(raster.GetProjection())
    band = mem.GetRasterBand(1)
    band.Fill(fill)
    return mem


class PolygonMask:
    """Polygons of all layers' features of ``path``, reprojected to the raster's CRS and held in memory.

    Pixels whose centre lies inside a polygon (GDAL rasterisation rule; holes honoured) are processed; the others
    are written as nodata. Windows without any such pixel are skipped. The network still sees the raster's real
    pixels around the polygons, so labels inside equal those of a whole-raster run.
    """

    def __init__(self, path: str, raster: gdal.Dataset) -> None:
        try:
            src = ogr.Open(path)
        except RuntimeError as exc:
            raise ParameterError(f"cannot open --mask {path}: {exc}") from exc
        if src is None or src.GetLayerCount() == 0:
            raise ParameterError(f"--mask {path} has no vector layers")
        dst_srs = get_srs(raster)
        self._ds = ogr.GetDriverByName("Memory").CreateDataSource("mask")
        self.layer = self._ds.CreateLayer("mask", srs=dst_srs, geom_type=ogr.wkbMultiPolygon)
        defn = self.layer.GetLayerDefn()
        count = 0
        for i in range(src.GetLayerCount()):
            for _, geom in polygon_features(src.GetLayer(i), dst_srs):
                out = ogr.Feature(defn)
                out.SetGeometry(geom)
                self.layer.CreateFeature(out)
                count += 1
        if count == 0:
            raise ParameterError(f"--mask {path} holds no polygons")

    def pixel_window(self, raster: gdal.Dataset) -> Window:
        """Bounding pixel window of the polygons on ``raster``'s grid (may extend past the raster)."""
        xmin, xmax, ymin, ymax = self.layer.GetExtent()
        inv = gdal.InvGeoTransform(raster.GetGeoTransform())
        pts = [gdal.ApplyGeoTransform(inv, x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
        cols, rows = [p[0] for p in pts], [p[1] for p in pts]
        c0, r0 = math.floor(min(cols)), math.floor(min(rows))
        return Window(r0, c0, max(math.ceil(max(rows)) - r0, 1), max(math.ceil(max(cols)) - c0, 1))

    def rasterize(self, raster: gdal.Dataset, win: Window) -> np.ndarray:
        """``(h, w)`` bool: pixels of ``win`` (on ``raster``'s grid) inside the polygons."""
        mem = window_grid(raster, win, gdal.GDT_Byte, 0)
        gdal.RasterizeLayer(mem, [1], self.layer, burn_values=[1])
        return mem.GetRasterBand(1).ReadAsArray() > 0
