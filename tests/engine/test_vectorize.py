"""Polygon simplification keeps the class coverage: no gaps, no overlaps, fewer vertices."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, ogr

from engine import vectorize
from engine.model_file import ModelInfo
from tests.engine.conftest import CLASS_NAMES, COLORS


def _stairs(path: str) -> gdal.Dataset:
    """120×120 labels at 0.5 m in EPSG:32633: three classes split by jagged, diagonal staircase boundaries."""
    yy, xx = np.mgrid[0:120, 0:120]
    rng = np.random.default_rng(0)
    wobble = rng.integers(-2, 3, size=120)
    labels = np.where(xx + wobble[yy] < yy, 0, np.where(xx + wobble[xx] < 1.6 * yy + 30, 1, 2)).astype(np.uint8)
    ds = gdal.GetDriverByName("GTiff").Create(path, 120, 120, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5))
    ds.SetProjection('PROJCS["x",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
                     'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
                     'PARAMETER["central_meridian",15],PARAMETER["scale_factor",0.9996],'
                     'PARAMETER["false_easting",500000],UNIT["metre",1]]')  # fmt: skip
    ds.GetRasterBand(1).WriteArray(labels)
    ds.GetRasterBand(1).SetNoDataValue(255)
    ds = None  # closed: the file is complete for the readers below
    return gdal.Open(path)


def _polygons(tmp_path, name: str, simplify: float) -> list[ogr.Geometry]:  # type: ignore[no-untyped-def]
    raster = _stairs(str(tmp_path / "labels.tif"))
    info = ModelInfo(arch="lite_resnet", num_classes=3, class_names=CLASS_NAMES, colors=COLORS)
    gpkg = str(tmp_path / f"{name}.gpkg")
    vectorize.polygonize(str(tmp_path / "labels.tif"), gpkg, info, raster, 0.25, simplify=simplify)
    ds = ogr.Open(gpkg)  # keep the dataset alive while its layer is read
    return [f.GetGeometryRef().Clone() for f in ds.GetLayer(0)]


def _gaps_and_overlaps(geoms: list[ogr.Geometry]) -> tuple[float, float]:
    union = geoms[0].Clone()
    for g in geoms[1:]:
        union = union.Union(g)
    total = sum(g.GetArea() for g in geoms)
    return 60.0 * 60.0 - union.GetArea(), total - union.GetArea()  # m²: the raster is 60 m square


def _vertices(geoms: list[ogr.Geometry]) -> int:
    return sum(g.GetGeometryRef(i).GetPointCount() for g in geoms for i in range(g.GetGeometryCount()))


def test_coverage_simplification_keeps_neighbours_together(tmp_path) -> None:
    exact = _polygons(tmp_path, "exact", 0.0)
    simple = _polygons(tmp_path, "simple", 1.5)
    assert _gaps_and_overlaps(exact) == pytest.approx((0.0, 0.0), abs=1e-6)
    gaps, overlaps = _gaps_and_overlaps(simple)
    assert abs(gaps) < 1e-6 and abs(overlaps) < 1e-6
    assert _vertices(simple) < _vertices(exact) / 3


def test_per_polygon_fallback_would_open_gaps(tmp_path, monkeypatch) -> None:
    """Without shapely the engine simplifies each polygon alone; that is what opens slivers (why coverage matters)."""
    monkeypatch.setattr(vectorize, "simplify_coverage", lambda layer, tol: None)
    gaps, overlaps = _gaps_and_overlaps(_polygons(tmp_path, "alone", 1.5))
    assert gaps > 0.1 or overlaps > 0.1
