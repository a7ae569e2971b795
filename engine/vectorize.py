"""Class raster → GeoPackage polygons (``class_id``, ``class_name``, ``area_m2``, ``confidence``) with GDAL/OGR.

Steps: (1) with a minimum area, ``gdal.SieveFilter`` first merges regions smaller than it into their largest
neighbour *on the raster*, so the polygons still tile the predicted area without gaps (topology is kept because it
is done before tracing); regions it cannot merge (touching only nodata) are dropped after tracing. (2)
``gdal.Polygonize`` traces every 4-connected region of one class (nodata excluded). (3) With a tolerance, the
polygons are simplified *as a coverage* (``shapely.coverage_simplify``, GEOS ≥ 3.12 bundled in shapely's wheel):
each shared edge is simplified once for both neighbours, so no gaps or overlaps appear between classes; this holds
all polygons of the output in memory at once. Without shapely it falls back to per-polygon
``SimplifyPreserveTopology`` (valid polygons, but neighbours may then show slivers up to the tolerance). Areas are
ground areas: planar in the CRS's linear unit for projected CRSs, and on a Lambert azimuthal equal-area projection
centred on the raster for geographic CRSs; NULL without CRS.

``confidence`` is the mean of the confidence raster (the chosen class's probability) over the polygon's pixels, as
traced in step (2), before simplification: the polygons are rasterised by feature id onto the class raster's grid
(pixel-centre rule, exact for polygons that follow pixel edges) into a temporary file, and the sums are gathered
:data:`ZONE_CHUNK_ROWS` rows at a time, so memory does not grow with the raster (only with the polygon count).
"""

from __future__ import annotations

import math
import os

import numpy as np
from osgeo import gdal, ogr, osr

from engine import faults
from engine.atomic import remove_with_sidecars
from engine.georef import center_latitude, get_srs
from engine.model_file import ModelInfo

gdal.UseExceptions()
ogr.UseExceptions()

LAYER_NAME = "segments"
ZONE_CHUNK_ROWS = 512  # rows of the zone and confidence rasters read at a time
ZONES_SUFFIX = ".zones.tif"  # next to the GeoPackage being written: polygon ids on the class raster's grid


def _area_transform(raster: gdal.Dataset) -> tuple[float, osr.CoordinateTransformation | None] | None:
    """(square-metre factor, transform to an equal-area CRS or None) for polygon areas; None without CRS."""
    srs = get_srs(raster)
    if srs is None:
        return None
    if not srs.IsGeographic():
        return srs.GetLinearUnits() ** 2, None
    gt = raster.GetGeoTransform()
    lon = gt[0] + gt[1] * raster.RasterXSize / 2
    laea = osr.SpatialReference()
    laea.SetLAEA(center_latitude(raster), lon, 0, 0)
    laea.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return 1.0, osr.CoordinateTransformation(srs, laea)


def _tolerance_in_crs_units(raster: gdal.Dataset, metres: float) -> float:
    srs = get_srs(raster)
    if srs is None:
        return metres  # pixel/CRS units: unknown ground size
    if srs.IsGeographic():
        return math.degrees(metres / 6371008.8)
    return metres / srs.GetLinearUnits()


def polygonize(
    labels_path: str,
    gpkg_path: str,
    info: ModelInfo,
    raster: gdal.Dataset,
    pixel_area_m2: float | None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    confidence_path: str | None = None,
) -> int:
    """Write the polygons of ``labels_path`` to a new GeoPackage ``gpkg_path``; returns the feature count.

    Args:
        labels_path: uint8 class raster with nodata.
        gpkg_path: GeoPackage to create (layer ``segments``).
        info: class names.
        raster: the source raster (CRS for areas).
        pixel_area_m2: ground area of one pixel (None without CRS: ``min_area`` is then in pixels).
        min_area: minimum polygon area, m² (0 = keep all).
        simplify: simplification tolerance, ground metres (0 = none).
        confidence_path: float32 confidence raster on the class raster's grid (nodata < 0) for the ``confidence``
            field; None: the field is NULL.
    """
    src = gdal.Open(labels_path)
    band = src.GetRasterBand(1)
    sieved_path = None
    if min_area > 0:
        threshold = max(1, math.ceil(min_area / pixel_area_m2)) if pixel_area_m2 else max(1, math.ceil(min_area))
        sieved_path = gpkg_path + ".sieve.tif"
        sieved = gdal.GetDriverByName("GTiff").CreateCopy(sieved_path, src, options=["TILED=YES", "COMPRESS=DEFLATE"])
        sband = sieved.GetRasterBand(1)
        gdal.SieveFilter(sband, sband.GetMaskBand(), sband, threshold, 4)
        sieved.FlushCache()
        band = sband
    remove_with_sidecars([gpkg_path])
    faults.point("vector_write")
    out = ogr.GetDriverByName("GPKG").CreateDataSource(gpkg_path)
    srs = get_srs(raster)
    layer = out.CreateLayer(LAYER_NAME, srs=srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    name_field = ogr.FieldDefn("class_name", ogr.OFTString)
    layer.CreateField(name_field)
    layer.CreateField(ogr.FieldDefn("area_m2", ogr.OFTReal))
    layer.CreateField(ogr.FieldDefn("confidence", ogr.OFTReal))
    layer.StartTransaction()
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [], callback=None)
    faults.point("vector_write")
    layer.CommitTransaction()
    means = zonal_means(out, src, confidence_path, gpkg_path + ZONES_SUFFIX) if confidence_path else {}
    area = _area_transform(raster)
    tol = _tolerance_in_crs_units(raster, simplify) if simplify > 0 else 0.0
    simplified = simplify_coverage(layer, tol) if tol > 0 else None
    layer.StartTransaction()
    drop = []
    layer.ResetReading()
    for feat in layer:
        cid = feat.GetFieldAsInteger("class_id")
        geom = feat.GetGeometryRef()
        if tol > 0:
            geom = simplified[feat.GetFID()] if simplified is not None else geom.SimplifyPreserveTopology(tol)
            if geom is None or geom.IsEmpty():
                drop.append(feat.GetFID())
                continue
            feat.SetGeometry(geom)
        if area is None:
            a = None
        else:
            factor, ct = area
            g = geom.Clone()
            if ct is not None:
                g.Transform(ct)
            a = g.GetArea() * factor
        size = a if a is not None else (geom.GetArea() if min_area > 0 else None)
        if min_area > 0 and size is not None and size < min_area:
            drop.append(feat.GetFID())
            continue
        feat.SetField("class_name", info.class_names[cid] if 0 <= cid < len(info.class_names) else "")
        mean = means.get(feat.GetFID())
        if mean is None:
            feat.SetFieldNull("confidence")
        else:
            feat.SetField("confidence", mean)
        if a is None:
            feat.SetFieldNull("area_m2")
        else:
            feat.SetField("area_m2", a)
        layer.SetFeature(feat)
    for fid in drop:
        layer.DeleteFeature(fid)
    faults.point("vector_write")
    layer.CommitTransaction()
    count = layer.GetFeatureCount()
    out = None
    band = sband = sieved = src = None
    if sieved_path and os.path.exists(sieved_path):
        remove_with_sidecars([sieved_path])
    return count


def zonal_means(gpkg: ogr.DataSource, grid: gdal.Dataset, values_path: str, zones_path: str) -> dict[int, float]:
    """``{fid: mean of values_path over the pixels of polygon fid}`` for the polygons of ``gpkg``'s layer.

    Args:
        gpkg: the open GeoPackage holding :data:`LAYER_NAME` (polygons on ``grid``'s pixel edges).
        grid: the raster the polygons were traced from (size and georeferencing of the zones).
        values_path: a float raster on ``grid``'s grid; values below 0 (nodata) are left out of the means.
        zones_path: a scratch GeoTIFF for the polygon ids (removed before returning).

    Returns:
        the mean per feature id; polygons without a valid pixel are absent.
    """
    width, height = grid.RasterXSize, grid.RasterYSize
    zones = gdal.GetDriverByName("GTiff").Create(
        zones_path, width, height, 1, gdal.GDT_Int32, ["TILED=YES", "COMPRESS=DEFLATE", "ZLEVEL=1", "SPARSE_OK=TRUE"]
    )
    try:
        zones.SetGeoTransform(grid.GetGeoTransform())
        if grid.GetProjection():
            zones.SetProjection(grid.GetProjection())
        ids = gpkg.ExecuteSQL(f'SELECT fid + 0 AS zone_id, geom FROM "{LAYER_NAME}"')  # "+ 0": a field, not the FID
        try:
            gdal.RasterizeLayer(zones, [1], ids, options=["ATTRIBUTE=zone_id"])
        finally:
            gpkg.ReleaseResultSet(ids)
        values_ds = gdal.Open(values_path)
        values, zband = values_ds.GetRasterBand(1), zones.GetRasterBand(1)
        sums, counts = np.zeros(1, np.float64), np.zeros(1, np.int64)
        for y in range(0, height, ZONE_CHUNK_ROWS):
            h = min(ZONE_CHUNK_ROWS, height - y)
            z = zband.ReadAsArray(0, y, width, h).ravel()
            v = values.ReadAsArray(0, y, width, h).ravel()
            keep = (z > 0) & (v >= 0)
            z, v = z[keep], v[keep].astype(np.float64)
            if z.size == 0:
                continue
            n = max(int(z.max()) + 1, sums.size)
            sums = np.pad(sums, (0, n - sums.size)) + np.bincount(z, weights=v, minlength=n)
            counts = np.pad(counts, (0, n - counts.size)) + np.bincount(z, minlength=n)
        values = zband = values_ds = None
    finally:
        zones = None
        remove_with_sidecars([zones_path])
    return {int(i): float(sums[i] / counts[i]) for i in np.flatnonzero(counts)}


def simplify_coverage(layer: ogr.Layer, tolerance: float) -> dict[int, ogr.Geometry | None] | None:
    """Simplify all polygons of ``layer`` together as a coverage (shared edges once); ``{fid: geometry}`` (None where
    a polygon vanished), or None when shapely with ``coverage_simplify`` is not installed (caller falls back)."""
    try:
        import shapely
    except ImportError:
        return None
    if not hasattr(shapely, "coverage_simplify"):
        return None
    fids, wkbs = [], []
    layer.ResetReading()
    for feat in layer:
        fids.append(feat.GetFID())
        wkbs.append(bytes(feat.GetGeometryRef().ExportToWkb()))
    if not fids:
        return {}
    result = shapely.coverage_simplify(shapely.from_wkb(wkbs), tolerance, simplify_boundary=True)
    return {
        fid: None if g is None or g.is_empty else ogr.CreateGeometryFromWkb(shapely.to_wkb(g))
        for fid, g in zip(fids, result, strict=True)
    }
