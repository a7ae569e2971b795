"""GDAL reading and writing for the engine: band mapping, value scaling, masks, GSD, extents, GeoTIFF outputs.

Decisions (where the issue is silent):

- **Band mapping**: ``--bands`` (1-based, one per model input band) wins. Otherwise each model band name
  (``red``/``green``/``blue``/``nir``/``gray``…) is matched to a raster band by colour interpretation or band
  description; if that fails and the raster has exactly as many non-alpha bands as the model needs, bands ``1..n`` are
  used in order (with a warning). Anything else is a :class:`BandMismatchError`.
- **Value scale**: the model file's ``value_range`` ``(lo, hi)`` is what the network saw. The raster's range is
  ``(0, --value-max)`` when given, else ``(0, 2**NBITS - 1)`` when the band has ``NBITS`` metadata, else ``(0, 255)``
  for 8-bit rasters, else it is taken to be the model's own range (16-bit/float rasters already in the model's
  units; a warning is logged when the raster's approximate maximum exceeds it). Raster values are mapped linearly
  onto the model's range; nothing is hard-coded to /255.
- **Masks**: GDAL's mask bands (nodata values, alpha band, internal masks). A pixel is masked when it is masked in
  *every* mapped band (a nodata value in one band alone is a dark pixel, not a hole), like rasterio's dataset mask.
  Masked pixels are fed to the network as the mean value (normalised 0) and written as output nodata.
- **No CRS**: allowed with a warning; the GSD is unknown, so no resampling, and areas are reported as ``null``.
- **Geographic CRS** (degrees): the pixel size in metres is computed on the WGS84 ellipsoid at the raster's centre
  latitude (separately east-west and north-south), so resampling makes pixels square on the ground.
- **GSD resampling**: when the raster's GSD differs from the model's ``gsd_m`` by more than
  :data:`GSD_TOLERANCE`, the raster is read through a GDAL warped VRT at the model's GSD with the same origin
  (pixel (0,0) corner), and the labels are warped back to the source grid (nearest neighbour) at the end.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr, osr

from engine.errors import BandMismatchError, OutputPathError, ParameterError, RasterReadError
from engine.model_file import ModelInfo
from engine.tiling import Window

gdal.UseExceptions()
ogr.UseExceptions()
osr.UseExceptions()

log = logging.getLogger("engine")

GSD_TOLERANCE = 0.05  # relative GSD difference below which the raster is used at its own resolution
WGS84_A = 6378137.0  # semi-major axis, m
WGS84_E2 = 6.69437999014e-3  # first eccentricity squared
OUTPUT_BLOCK = 256  # GeoTIFF tile size of the outputs
OVERVIEW_MIN_SIZE = 256  # build overviews until the smallest is below this size
GEOTIFF_OPTIONS = [
    "TILED=YES",
    f"BLOCKXSIZE={OUTPUT_BLOCK}",
    f"BLOCKYSIZE={OUTPUT_BLOCK}",
    "COMPRESS=DEFLATE",
    "BIGTIFF=IF_SAFER",
]

_COLOR_INTERP = {
    gdal.GCI_RedBand: "red",
    gdal.GCI_GreenBand: "green",
    gdal.GCI_BlueBand: "blue",
    gdal.GCI_GrayIndex: "gray",
    gdal.GCI_PaletteIndex: "palette",
    gdal.GCI_AlphaBand: "alpha",
}
_BAND_ALIASES = {
    "nir": ("nir", "near-infrared", "nearinfrared", "near infrared", "infrared", "ir"),
    "gray": ("gray", "grey", "pan", "panchromatic"),
}


def open_raster(path: str) -> gdal.Dataset:
    """Open ``path`` read-only; :class:`RasterReadError` when GDAL cannot."""
    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise RasterReadError(f"input raster not found: {path}")
    try:
        ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterReadError(f"GDAL cannot read {path}: {exc}") from exc
    if ds is None or ds.RasterCount < 1:
        raise RasterReadError(f"{path} has no raster bands")
    if ds.RasterXSize < 1 or ds.RasterYSize < 1:
        raise RasterReadError(f"{path} has no pixels ({ds.RasterXSize}×{ds.RasterYSize})")
    complex_bands = [i for i in range(1, ds.RasterCount + 1) if gdal.DataTypeIsComplex(ds.GetRasterBand(i).DataType)]
    if complex_bands:
        kind = gdal.GetDataTypeName(ds.GetRasterBand(complex_bands[0]).DataType)
        raise RasterReadError(
            f"{path} has complex-valued bands ({kind}); convert to real values first, e.g. "
            "`gdal_translate -ot Float32` of the amplitude (gdal_calc.py --calc='abs(A)')"
        )
    return ds


def _band_names(band: gdal.Band) -> set[str]:
    names = {(band.GetDescription() or "").strip().lower()}
    names.add(_COLOR_INTERP.get(band.GetColorInterpretation(), ""))
    return {n for n in names if n}


def select_bands(ds: gdal.Dataset, info: ModelInfo, override: list[int] | None) -> list[int]:
    """1-based raster band indices feeding the model's ``info.bands`` in order (see the module docstring)."""
    need = len(info.bands)
    if override:
        if len(override) != need:
            raise BandMismatchError(
                f"--bands lists {len(override)} bands but the model needs {need} ({', '.join(info.bands)})"
            )
        bad = [b for b in override if not 1 <= b <= ds.RasterCount]
        if bad:
            raise BandMismatchError(f"--bands {bad} not in 1..{ds.RasterCount} (the raster has {ds.RasterCount} bands)")
        return list(override)
    bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
    chosen: list[int] = []
    for want in info.bands:
        aliases = _BAND_ALIASES.get(want.lower(), (want.lower(),))
        hit = [i + 1 for i, b in enumerate(bands) if _band_names(b) & set(aliases)]
        if not hit:
            break
        chosen.append(hit[0])
    if len(chosen) == need:
        return chosen
    data_bands = [i + 1 for i, b in enumerate(bands) if b.GetColorInterpretation() != gdal.GCI_AlphaBand]
    if len(data_bands) == need:
        log.warning(
            "band colour interpretation does not name the model's bands %s; using bands %s in order",
            list(info.bands),
            data_bands,
        )
        return data_bands
    raise BandMismatchError(
        f"the raster has {len(data_bands)} data bands but the model needs {need} ({', '.join(info.bands)}) and the "
        "colour interpretation does not say which is which"
    )


def input_range(ds: gdal.Dataset, bands: list[int], info: ModelInfo, value_max: float | None) -> tuple[float, float]:
    """``(lo, hi)`` of the raster values that map onto ``info.value_range`` (see the module docstring)."""
    if value_max is not None:
        if not value_max > 0:
            raise ParameterError(f"--value-max must be > 0, got {value_max}")
        return 0.0, float(value_max)
    band = ds.GetRasterBand(bands[0])
    nbits = band.GetMetadataItem("NBITS", "IMAGE_STRUCTURE")
    if nbits:
        return 0.0, float(2 ** int(nbits) - 1)
    if band.DataType == gdal.GDT_Byte:
        return 0.0, 255.0
    lo, hi = info.value_range
    try:
        approx_max = band.ComputeRasterMinMax(True)[1]
        if approx_max > hi * 1.5:
            log.warning(
                "raster values reach about %.0f but the model expects %g..%g; pass --value-max to rescale",
                approx_max,
                lo,
                hi,
            )
    except RuntimeError:
        pass
    return lo, hi


@dataclass(frozen=True)
class Normalizer:
    """Raster values → network input: linear map onto the model's value range, then ``(x - mean) / std``."""

    scale: np.ndarray  # (C, 1, 1) float32
    offset: np.ndarray  # (C, 1, 1) float32

    @classmethod
    def create(cls, info: ModelInfo, raster_range: tuple[float, float]) -> Normalizer:
        (rlo, rhi), (mlo, mhi) = raster_range, info.value_range
        k = (mhi - mlo) / (rhi - rlo)
        mean, std = np.asarray(info.mean, np.float64), np.asarray(info.std, np.float64)
        # model value = mlo + (x - rlo) * k ; input = (model value - mean) / std = x * scale + offset
        scale = k / std
        offset = (mlo - rlo * k - mean) / std
        return cls(scale.astype(np.float32)[:, None, None], offset.astype(np.float32)[:, None, None])

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` raw → ``(C, h, w)`` float32 normalised."""
        return raw.astype(np.float32) * self.scale + self.offset


# ----------------------------------------------------------------------------------------------------------- geometry
def _ellipsoid_radii(lat_deg: float) -> tuple[float, float]:
    """(meridional M, prime-vertical N) radii of curvature of WGS84 at ``lat_deg``, metres."""
    s = math.sin(math.radians(lat_deg))
    w = 1 - WGS84_E2 * s * s
    return WGS84_A * (1 - WGS84_E2) / w**1.5, WGS84_A / math.sqrt(w)


def get_srs(ds: gdal.Dataset) -> osr.SpatialReference | None:
    wkt = ds.GetProjection()
    if not wkt:
        return None
    srs = osr.SpatialReference(wkt=wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


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
        m, n = _ellipsoid_radii(center_latitude(ds))
        lat = math.radians(center_latitude(ds))
        unit = srs.GetAngularUnits()  # radians per unit
        return sx * unit * n * math.cos(lat), sy * unit * m
    unit = srs.GetLinearUnits()
    return sx * unit, sy * unit


def row_pixel_areas_m2(ds: gdal.Dataset, rows: np.ndarray) -> np.ndarray | None:
    """Ground area (m²) of one pixel in each of ``rows`` (absolute raster rows); None without CRS."""
    srs = get_srs(ds)
    if srs is None:
        return None
    gt = ds.GetGeoTransform()
    if not srs.IsGeographic():
        unit = srs.GetLinearUnits()
        return np.full(rows.shape, abs(gt[1] * gt[5] - gt[2] * gt[4]) * unit * unit)
    unit = srs.GetAngularUnits()
    lats = gt[3] + gt[5] * (rows + 0.5)  # north-up rasters; rotation terms are ignored for areas
    s = np.sin(np.radians(lats))
    w = 1 - WGS84_E2 * s * s
    m, n = WGS84_A * (1 - WGS84_E2) / w**1.5, WGS84_A / np.sqrt(w)
    return np.abs(gt[1] * unit * n * np.cos(np.radians(lats)) * gt[5] * unit * m)


def bbox_to_window(ds: gdal.Dataset, bbox: tuple[float, float, float, float], bbox_crs: str | None) -> Window:
    """Pixel window (clipped to the raster) covering ``bbox = (xmin, ymin, xmax, ymax)`` given in ``bbox_crs``."""
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
        # densify the edges so curved transformed edges stay inside the box
        dense = [(xmin + (xmax - xmin) * t / 20, y) for t in range(21) for y in (ymin, ymax)]
        dense += [(x, ymin + (ymax - ymin) * t / 20) for t in range(21) for x in (xmin, xmax)]
        pts = [ct.TransformPoint(x, y)[:2] for x, y in dense]
    inv = gdal.InvGeoTransform(ds.GetGeoTransform())
    cols, rows = zip(*(gdal.ApplyGeoTransform(inv, x, y) for x, y in pts), strict=True)
    c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), ds.RasterXSize)
    r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), ds.RasterYSize)
    if c1 <= c0 or r1 <= r0:
        raise ParameterError(f"--bbox {bbox} does not overlap the raster")
    return Window(r0, c0, r1 - r0, c1 - c0)


# -------------------------------------------------------------------------------------------------------- resampling
def work_dataset(ds: gdal.Dataset, model_gsd: float | None) -> gdal.Dataset:
    """The dataset the network reads: ``ds`` itself, or a warped VRT at the model's GSD with the same origin.

    The VRT has the source bands plus an alpha band carrying the source masks; its pixel (0, 0) corner is the
    source's, so the tiling grid stays anchored to the raster.
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
    downsampling = gx < model_gsd
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
    vrt = gdal.Warp(
        "",
        ds,
        format="VRT",
        outputBounds=bounds,
        width=width,
        height=height,
        resampleAlg="average" if downsampling else "bilinear",
        dstAlpha=True,
        multithread=False,
    )
    return vrt


def read_valid_mask(ds: gdal.Dataset, bands: list[int], win: Window) -> np.ndarray:
    """``(h, w)`` bool: pixels valid in at least one mapped band (see the module docstring)."""
    valid = None
    for b in bands:
        band = ds.GetRasterBand(b)
        if band.GetMaskFlags() & gdal.GMF_ALL_VALID:
            return np.ones((win.height, win.width), bool)
        m = band.GetMaskBand().ReadAsArray(win.col, win.row, win.width, win.height) > 0
        valid = m if valid is None else (valid | m)
        if band.GetMaskFlags() & gdal.GMF_PER_DATASET:
            break
    assert valid is not None
    return valid


def read_window(ds: gdal.Dataset, bands: list[int], win: Window) -> np.ndarray:
    """``(C, h, w)`` raw values of the mapped bands."""
    try:
        return np.stack([ds.GetRasterBand(b).ReadAsArray(win.col, win.row, win.width, win.height) for b in bands])
    except RuntimeError as exc:
        raise RasterReadError(
            f"cannot read rows {win.row}-{win.row + win.height}, columns {win.col}-{win.col + win.width} of the raster "
            f"(the file may be truncated or damaged): {exc}",
            "check the file with `gdalinfo -checksum FILE`; copy or export it again",
        ) from exc


# ----------------------------------------------------------------------------------------------------------- outputs
def check_output_path(path: str, overwrite: bool) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputPathError(f"the output folder {folder} is a file, not a folder", "choose another output path")
    if not os.path.isdir(folder):
        raise OutputPathError(f"output folder does not exist: {folder}", "create it, or choose another output path")
    if not os.access(folder, os.W_OK):
        raise OutputPathError(f"output folder is not writable: {folder}", "choose a folder you can write to")
    if os.path.exists(path) and not overwrite:
        raise OutputPathError(
            f"output exists: {path} (pass --overwrite to replace it)", "pass --overwrite, or choose another output path"
        )


def remove_dataset_files(path: str) -> None:
    """Remove ``path`` and its GDAL side-car files (``.aux.xml``, ``.ovr``), ignoring missing ones."""
    for p in (path, path + ".aux.xml", path + ".ovr", path + "-journal"):
        if os.path.exists(p):
            os.remove(p)


def commit_dataset(tmp: str, final: str) -> None:
    """Rename ``tmp`` (and its ``.aux.xml``) to ``final``, replacing an existing ``final``."""
    remove_dataset_files(final) if os.path.exists(final) else None
    if os.path.exists(tmp + ".aux.xml"):
        os.replace(tmp + ".aux.xml", final + ".aux.xml")
    os.replace(tmp, final)


def create_geotiff(
    path: str, width: int, height: int, geotransform: tuple[float, ...], projection: str, dtype: int, nodata: float
) -> gdal.Dataset:
    """Create a tiled DEFLATE single-band GeoTIFF filled with ``nodata``."""
    try:
        out = gdal.GetDriverByName("GTiff").Create(path, width, height, 1, dtype, GEOTIFF_OPTIONS)
    except RuntimeError as exc:
        raise OutputPathError(f"cannot create {path}: {exc}") from exc
    out.SetGeoTransform(geotransform)
    if projection:
        out.SetProjection(projection)
    band = out.GetRasterBand(1)
    band.SetNoDataValue(nodata)
    band.Fill(nodata)
    return out


def style_labels(ds: gdal.Dataset, info: ModelInfo) -> None:
    """Colour table, category names (in the ``.aux.xml``) and ``CLASS_NAMES`` band metadata (inside the TIFF)."""
    band = ds.GetRasterBand(1)
    table = gdal.ColorTable()
    for i, (r, g, b) in enumerate(info.colors):
        table.SetColorEntry(i, (r, g, b, 255))
    band.SetRasterColorTable(table)
    band.SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
    band.SetCategoryNames(list(info.class_names))
    band.SetMetadataItem("CLASS_NAMES", ",".join(info.class_names))
    band.SetDescription("class id")


def overview_levels(width: int, height: int) -> list[int]:
    levels, f = [], 2
    while max(width, height) / f >= OVERVIEW_MIN_SIZE / 2 and max(width, height) > OVERVIEW_MIN_SIZE:
        levels.append(f)
        f *= 2
    return levels


def to_cog(src: str, dst: str, resampling: str) -> None:
    """Copy a GeoTIFF to a Cloud-Optimized GeoTIFF (DEFLATE, overviews made by the COG driver)."""
    gdal.Translate(
        dst,
        src,
        format="COG",
        creationOptions=[
            "COMPRESS=DEFLATE",
            f"BLOCKSIZE={OUTPUT_BLOCK}",
            f"OVERVIEW_RESAMPLING={resampling}",
            "BIGTIFF=IF_SAFER",
        ],
    )
