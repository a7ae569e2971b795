"""Class raster → GeoPackage polygons (``class_id``, ``class_name``, ``area_m2``) with GDAL/OGR.

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
"""

from __future__ import annotations

import math
import os

from osgeo import gdal, ogr, osr

from engine import faults
from engine.atomic import remove_with_sidecars
from engine.georef import center_latitude, get_srs
from engine.model_file import ModelInfo

gdal.UseExceptions()
ogr.UseExceptions()

LAYER_NAME = "segments"


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
    layer.StartTransaction()
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [], callback=None)
    faults.point("vector_write")
    layer.CommitTransaction()
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
