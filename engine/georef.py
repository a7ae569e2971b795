"""Where pixels are on the ground: CRS, metric pixel sizes and areas, extents, window geotransforms, the work grid.

Extents (``--window``, ``--bbox``) become pixel windows here; the work grid is the raster resampled to the GSD the
run uses (``--gsd``: the model's, the raster's own, or a number of metres; :func:`parse_gsd`, :func:`target_gsd`).

Decisions (where the issue is silent):

- **No CRS**: allowed with a warning; the GSD is unknown, so no resampling, and areas are reported as ``null``.
- **Geographic CRS** (degrees): the pixel size in metres is computed on the WGS84 ellipsoid at the raster's centre
  latitude (separately east-west and north-south), so resampling makes pixels square on the ground; pixel areas use
  each row's own latitude.
- **Mercator CRSs** (EPSG:3857 of web basemaps, EPSG:3395): their metres are true only at the equator (a 3857 pixel
  of 0.6 m is 0.41 m on the ground at 46°N), so pixel sizes and areas are the ground's, at the raster's centre
  latitude (sizes) or each row's latitude (areas), from the projection's local scale. Other projected CRSs keep their
  own units (their scale error is a fraction of a percent).
- **GSD resampling**: when the raster's GSD differs from the model's ``gsd_m`` by more than
  :data:`GSD_TOLERANCE`, the raster is read through a GDAL warped VRT at the model's GSD with the same origin
  (pixel (0,0) corner), so the tiling grid stays anchored to the raster; the labels are warped back to the source
  grid (nearest neighbour) at the end (:mod:`engine.outputs`).
- **--gsd**: ``model`` (default) resamples to the model file's ``gsd_m`` as above; ``native`` reads the raster at
  its own resolution whatever the model's GSD; a number of metres resamples to that GSD (the same warped VRT). A
  number for a raster without CRS is an error (its GSD is unknown); ``model`` then warns and reads it natively.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from osgeo import gdal, osr

from engine.errors import ParameterError
from engine.tiling import Window

gdal.UseExceptions()
osr.UseExceptions()

log = logging.getLogger("engine")

GSD_MODEL, GSD_NATIVE = "model", "native"  # the named --gsd choices
GSD_TOLERANCE = 0.05  # relative GSD difference below which the raster is used at its own resolution
WGS84_A = 6378137.0  # semi-major axis, m
WGS84_E2 = 6.69437999014e-3  # first eccentricity squared
BBOX_EDGE_POINTS = 20  # segments per edge when transforming a --bbox, so curved edges stay inside the box


def get_srs(ds: gdal.Dataset) -> osr.SpatialReference | None:
    """The raster's CRS in x/y (GIS) axis order, or None when it has none."""
    wkt = ds.GetProjection()
    if not wkt:
        return None
    srs = osr.SpatialReference(wkt=wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def ellipsoid_radii(lat_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radii of curvature of WGS84 at latitudes ``lat_deg`` (degrees, any shape).

    Returns:
        ``(M, N)``: meridional and prime-vertical radii in metres, each of ``lat_deg``'s shape.
    """
    s = np.sin(np.radians(lat_deg))
    w = 1 - WGS84_E2 * s * s
    return WGS84_A * (1 - WGS84_E2) / w**1.5, WGS84_A / np.sqrt(w)


def center_latitude(ds: gdal.Dataset) -> float:
    """Latitude (degrees) of the raster's centre, for geographic CRSs."""
    gt = ds.GetGeoTransform()
    cx = gt[0] + gt[1] * ds.RasterXSize / 2 + gt[2] * ds.RasterYSize / 2
    cy = gt[3] + gt[4] * ds.RasterXSize / 2 + gt[5] * ds.RasterYSize / 2
    srs = get_srs(ds)
    assert srs is not None
    geo = srs.CloneGeogCS()
    geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    _, lat, _ = osr.CoordinateTransformation(srs, geo).TransformPoint(cx, cy)
    return float(lat)


def pixel_size_m(ds: gdal.Dataset) -> tuple[float, float] | None:
    """(east-west, north-south) pixel size in metres at the raster centre; None without CRS."""
    srs = get_srs(ds)
    if srs is None:
        return None
    gt = ds.GetGeoTransform()
    sx, sy = math.hypot(gt[1], gt[4]), math.hypot(gt[2], gt[5])
    if srs.IsGeographic():
        lat = center_latitude(ds)
        m, n = (float(r) for r in ellipsoid_radii(np.asarray(lat)))
        unit = srs.GetAngularUnits()  # radians per unit
        return sx * unit * n * math.cos(math.radians(lat)), sy * unit * m
    unit = srs.GetLinearUnits()
    if is_mercator(srs):
        cx = gt[0] + gt[1] * ds.RasterXSize / 2
        cy = gt[3] + gt[5] * ds.RasterYSize / 2
        kx, ky = mercator_ground_scale(srs, cx, np.array([cy]))
        return sx * unit * float(kx[0]), sy * unit * float(ky[0])
    return sx * unit, sy * unit


def is_mercator(srs: osr.SpatialReference) -> bool:
    """Whether ``srs`` is a (pseudo-)Mercator projection, whose metres are ground metres only at the equator."""
    return bool(srs.IsProjected()) and srs.GetAttrValue("PROJECTION") in ("Mercator_1SP", "Mercator_2SP")


def mercator_ground_scale(srs: osr.SpatialReference, x: float, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground metres per projected metre, east-west and north-south, at ``(x, y)`` for each of ``ys``.

    Measured on the WGS84 ellipsoid through the projection itself (half a metre either side of each point), so it
    holds for the spherical Web Mercator (EPSG:3857) and the ellipsoidal Mercator (EPSG:3395) alike.
    """
    geo = srs.CloneGeogCS()
    geo.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(srs, geo)
    h = 0.5
    pts = [(x + dx, float(y) + dy) for y in ys for dx, dy in ((-h, 0), (h, 0), (0, -h), (0, h))]
    ll = np.asarray(ct.TransformPoints(pts))[:, :2].reshape(len(ys), 4, 2)
    lat = ll[:, :, 1].mean(axis=1)
    m, n = ellipsoid_radii(lat)
    kx = np.radians(ll[:, 1, 0] - ll[:, 0, 0]) * n * np.cos(np.radians(lat)) / (2 * h)
    ky = np.radians(ll[:, 3, 1] - ll[:, 2, 1]) * m / (2 * h)
    return np.abs(kx), np.abs(ky)


def row_pixel_areas_m2(ds: gdal.Dataset, rows: np.ndarray) -> np.ndarray | None:
    """Ground area (m²) of one pixel in each of ``rows`` (absolute raster rows); None without CRS."""
    srs = get_srs(ds)
    if srs is None:
        return None
    gt = ds.GetGeoTransform()
    if not srs.IsGeographic():
        unit = srs.GetLinearUnits()
        area = np.full(rows.shape, abs(gt[1] * gt[5] - gt[2] * gt[4]) * unit * unit)
        if is_mercator(srs):
            kx, ky = mercator_ground_scale(srs, gt[0] + gt[1] * ds.RasterXSize / 2, gt[3] + gt[5] * (rows + 0.5))
            area = area * kx * ky
        return area
    unit = srs.GetAngularUnits()
    lats = gt[3] + gt[5] * (rows + 0.5)  # north-up rasters; rotation terms are ignored for areas
    m, n = ellipsoid_radii(lats)
    return np.abs(gt[1] * unit * n * np.cos(np.radians(lats)) * gt[5] * unit * m)


def window_geotransform(ds: gdal.Dataset, win: Window) -> tuple[float, ...]:
    """GDAL geotransform of the pixel window ``win`` of ``ds`` (same pixel size, origin at the window's corner)."""
    gt = ds.GetGeoTransform()
    return (
        gt[0] + win.col * gt[1] + win.row * gt[2],
        gt[1],
        gt[2],
        gt[3] + win.col * gt[4] + win.row * gt[5],
        gt[4],
        gt[5],
    )


def requested_window(
    ds: gdal.Dataset,
    window: tuple[int, int, int, int] | None,
    bbox: tuple[float, float, float, float] | None,
    bbox_crs: str | None,
) -> Window:
    """The pixel window of ``ds`` to process, clipped to the raster; the whole raster when neither box is given.

    Args:
        ds: the source raster.
        window: ``(xoff, yoff, xsize, ysize)`` pixels, GDAL order (``--window``).
        bbox: ``(xmin, ymin, xmax, ymax)`` in ``bbox_crs`` (``--bbox``, see :func:`bbox_to_window`).
        bbox_crs: CRS of ``bbox``; None = the raster's.

    Raises:
        ParameterError: the window or box does not overlap the raster.
    """
    full = Window(0, 0, ds.RasterYSize, ds.RasterXSize)
    if window is not None:
        xoff, yoff, xsize, ysize = window
        region = Window(yoff, xoff, ysize, xsize).intersection(full)
        if region is None or xsize < 1 or ysize < 1:
            raise ParameterError(f"--window {window} is not inside the {full.width}×{full.height} raster")
        return region
    if bbox is not None:
        return bbox_to_window(ds, bbox, bbox_crs)
    return full


def bbox_to_window(ds: gdal.Dataset, bbox: tuple[float, float, float, float], bbox_crs: str | None) -> Window:
    """Pixel window (clipped to the raster) covering ``bbox = (xmin, ymin, xmax, ymax)`` given in ``bbox_crs``.

    Raises:
        ParameterError: an empty box, an unknown ``bbox_crs``, a CRS for a raster without one, or no overlap.
    """
    xmin, ymin, xmax, ymax = bbox
    if not (xmax > xmin and ymax > ymin):
        raise ParameterError(f"--bbox must be xmin,ymin,xmax,ymax with max > min, got {bbox}")
    pts = [(xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax)]
    srs = get_srs(ds)
    if bbox_crs:
        if srs is None:
            raise ParameterError(
                "--bbox-crs given but the raster has no CRS; give the box in pixel units with --window"
            )
        src = osr.SpatialReference()
        try:
            src.SetFromUserInput(bbox_crs)
        except RuntimeError as exc:
            raise ParameterError(f"unknown --bbox-crs {bbox_crs!r} (use e.g. EPSG:4326)") from exc
        src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        ct = osr.CoordinateTransformation(src, srs)
        k = BBOX_EDGE_POINTS
        dense = [(xmin + (xmax - xmin) * t / k, y) for t in range(k + 1) for y in (ymin, ymax)]
        dense += [(x, ymin + (ymax - ymin) * t / k) for t in range(k + 1) for x in (xmin, xmax)]
        pts = [ct.TransformPoint(x, y)[:2] for x, y in dense]
    inv = gdal.InvGeoTransform(ds.GetGeoTransform())
    cols, rows = zip(*(gdal.ApplyGeoTransform(inv, x, y) for x, y in pts), strict=True)
    c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), ds.RasterXSize)
    r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), ds.RasterYSize)
    if c1 <= c0 or r1 <= r0:
        raise ParameterError(f"--bbox {bbox} does not overlap the raster")
    return Window(r0, c0, r1 - r0, c1 - c0)


def parse_gsd(value: str | float) -> str | float:
    """A ``--gsd`` value: ``"model"``, ``"native"`` or a positive number of metres (a float, or its text).

    Raises:
        ParameterError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() in (GSD_MODEL, GSD_NATIVE):
        return value.strip().lower()
    try:
        metres = float(value)
    except (TypeError, ValueError):
        metres = math.nan
    if not (math.isfinite(metres) and metres > 0):
        raise ParameterError(
            f"--gsd must be {GSD_MODEL}, {GSD_NATIVE} or a ground sample distance in metres > 0, got {value!r}",
            "e.g. --gsd model (the model's GSD), --gsd native (the raster's own) or --gsd 0.3",
        )
    return metres


def target_gsd(choice: str | float, model_gsd: float | None, ds: gdal.Dataset) -> float | None:
    """The GSD (m) the network reads ``ds`` at for the ``--gsd`` ``choice`` (:func:`parse_gsd`); None = native.

    Raises:
        ParameterError: a number of metres for a raster without CRS.
    """
    if choice == GSD_NATIVE:
        return None
    if choice == GSD_MODEL:
        return model_gsd
    if get_srs(ds) is None:
        raise ParameterError(
            f"--gsd {choice:g} needs a raster with a CRS; this one has none, so its ground resolution is unknown",
            "use --gsd native, or assign the raster's CRS first (gdal_edit.py -a_srs EPSG:XXXX FILE)",
        )
    return float(choice)


def gsd_fields(source: gdal.Dataset, work: gdal.Dataset, choice: str | float) -> dict[str, object]:
    """The ``start`` event's GSD fields: what the run reads at and the resampling factor.

    Returns:
        ``gsd_choice`` (``model``, ``native`` or metres), ``native_gsd_m`` (the raster's own, ``[x, y]`` metres, None
        without CRS), ``gsd_m`` (the work grid's ``[x, y]`` metres, None without CRS) and ``resampling_factor``
        (work pixel size / source pixel size, ``[x, y]``: 2 means the raster was read at half its resolution, 1 not
        resampled).
    """
    native = pixel_size_m(source)
    fx, fy = source.RasterXSize / work.RasterXSize, source.RasterYSize / work.RasterYSize
    used = None if native is None else [round(native[0] * fx, 6), round(native[1] * fy, 6)]
    return {
        "gsd_choice": choice,
        "native_gsd_m": None if native is None else [round(v, 6) for v in native],
        "gsd_m": used,
        "resampling_factor": [round(fx, 4), round(fy, 4)],
    }


def work_dataset(ds: gdal.Dataset, model_gsd: float | None) -> gdal.Dataset:
    """The dataset the network reads: ``ds`` itself, or a warped VRT at the model's GSD with the same origin.

    The VRT has the source bands plus an alpha band carrying the source masks; its pixel (0, 0) corner is the
    source's, so the tiling grid stays anchored to the raster.

    Raises:
        ParameterError: a rotated raster that would need resampling.
    """
    size = pixel_size_m(ds)
    if model_gsd is None or size is None:
        if model_gsd is not None:
            log.warning("the raster has no CRS: its GSD is unknown, so it is processed at its own resolution")
        return ds
    gx, gy = size
    if abs(gx / model_gsd - 1) <= GSD_TOLERANCE and abs(gy / model_gsd - 1) <= GSD_TOLERANCE:
        return ds
    gt = ds.GetGeoTransform()
    if gt[2] != 0 or gt[4] != 0:
        raise ParameterError("rotated rasters cannot be resampled to the model GSD; warp the raster north-up first")
    width = max(1, round(ds.RasterXSize * gx / model_gsd))
    height = max(1, round(ds.RasterYSize * gy / model_gsd))
    bounds = (gt[0], gt[3] + gt[5] * ds.RasterYSize, gt[0] + gt[1] * ds.RasterXSize, gt[3])
    log.info(
        "resampling %dx%d px at %.3gx%.3g m to %dx%d px at the model GSD %.3g m",
        ds.RasterXSize,
        ds.RasterYSize,
        gx,
        gy,
        width,
        height,
        model_gsd,
    )
    return gdal.Warp(
        "",
        ds,
        format="VRT",
        outputBounds=bounds,
        width=width,
        height=height,
        resampleAlg="average" if gx < model_gsd else "bilinear",  # downsampling averages
        dstAlpha=True,
        multithread=False,
    )


def covering_window(win: Window, grid: gdal.Dataset, other: gdal.Dataset) -> Window:
    """The pixels of ``other`` covering the window ``win`` of ``grid``, two grids over the same extent.

    Used between the source grid and the work grid (:func:`work_dataset`), either way; identity when both have the
    same size. The result covers at least one pixel and stays inside ``other``.
    """
    if (other.RasterXSize, other.RasterYSize) == (grid.RasterXSize, grid.RasterYSize):
        return win
    fy, fx = other.RasterYSize / grid.RasterYSize, other.RasterXSize / grid.RasterXSize
    r0, c0 = math.floor(win.row * fy), math.floor(win.col * fx)
    r1 = min(max(math.ceil(win.row_end * fy), r0 + 1), other.RasterYSize)
    c1 = min(max(math.ceil(win.col_end * fx), c0 + 1), other.RasterXSize)
    return Window(r0, c0, r1 - r0, c1 - c0)
