"""GDAL input reading for the engine: opening rasters, band selection, value scaling, masks and windows.

Decisions (where the issue is silent):

- **Band mapping**: the rule of :mod:`engine.bands` (``--bands`` wins; else colour interpretation or description;
  else bands ``1..n`` in order when the non-alpha count matches; else :class:`BandMismatchError`).
- **Value scale**: the model file's ``value_range`` ``(lo, hi)`` is what the network saw. The raster's range is
  ``(0, --value-max)`` when given, else ``(0, 2**NBITS - 1)`` when the band has ``NBITS`` metadata, else ``(0, 255)``
  for 8-bit rasters, else it is taken to be the model's own range (16-bit/float rasters already in the model's
  units; a warning is logged when the raster's approximate maximum exceeds it). Raster values are mapped linearly
  onto the model's range; nothing is hard-coded to /255.
- **Masks**: GDAL's mask bands (nodata values, alpha band, internal masks). A pixel is masked when it is masked in
  *every* mapped band (a nodata value in one band alone is a dark pixel, not a hole), like rasterio's dataset mask.
  Masked pixels are fed to the network as the mean value (normalised 0) and written as output nodata.

Where pixels are on the ground (CRS, GSD, resampling) is :mod:`engine.georef`; what is written is
:mod:`engine.outputs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from engine import sources
from engine.bands import RasterBand, map_bands
from engine.errors import ParameterError, RasterReadError
from engine.model_file import ModelInfo
from engine.tiling import Window

gdal.UseExceptions()

log = logging.getLogger("engine")

GDAL_CACHE_BYTES = 128 * 2**20  # GDAL block cache during a run (see bounded_gdal_cache)


def open_raster(path: str) -> gdal.Dataset:
    """Open ``path`` read-only: a file or any GDAL dataset name (:mod:`engine.sources`); :class:`RasterReadError` when
    GDAL cannot (:class:`engine.sources.RemoteReadError` for network failures)."""
    path = sources.dataset_name(path)
    if sources.is_local_path(path) and not os.path.exists(path):
        raise RasterReadError(f"input raster not found: {path}")
    if sources.is_remote(path):
        sources.apply_http_defaults()
    try:
        with sources.opening(path):
            ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise sources.open_error(path, exc) from exc
    if ds is None or ds.RasterCount < 1:
        raise RasterReadError(f"{sources.describe(path)} has no raster bands")
    if ds.RasterXSize < 1 or ds.RasterYSize < 1:
        raise RasterReadError(f"{sources.describe(path)} has no pixels ({ds.RasterXSize}×{ds.RasterYSize})")
    complex_bands = [i for i in range(1, ds.RasterCount + 1) if gdal.DataTypeIsComplex(ds.GetRasterBand(i).DataType)]
    if complex_bands:
        kind = gdal.GetDataTypeName(ds.GetRasterBand(complex_bands[0]).DataType)
        raise RasterReadError(
            f"{path} has complex-valued bands ({kind}); convert to real values first, e.g. "
            "`gdal_translate -ot Float32` of the amplitude (gdal_calc.py --calc='abs(A)')"
        )
    return ds


def select_bands(ds: gdal.Dataset, model_bands: Sequence[str], override: list[int] | None) -> list[int]:
    """1-based raster band indices feeding ``model_bands`` (a model's ``info.bands``) in order.

    The rule is :func:`engine.bands.map_bands`'s.

    Raises:
        BandMismatchError: see :func:`engine.bands.map_bands`.
    """
    return map_bands(model_bands, [describe_band(ds.GetRasterBand(i + 1)) for i in range(ds.RasterCount)], override)


def describe_band(band: gdal.Band) -> RasterBand:
    """The names a GDAL band answers to in band mapping (colour interpretation and description)."""
    return RasterBand(gdal.GetColorInterpretationName(band.GetColorInterpretation()) or "", band.GetDescription() or "")


def input_range(
    ds: gdal.Dataset, bands: list[int], value_range: tuple[float, float], value_max: float | None
) -> tuple[float, float]:
    """``(lo, hi)`` of the raster values that map onto a model's ``value_range`` (see the module docstring)."""
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
    lo, hi = value_range
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
    """Raster values → network input: linear map onto the model's value range, then ``(x - mean) / std``.

    Computed in float32 in that order, as the reference code normalises (``(img - mean) / std``), not folded into
    one ``x * scale + offset``: the folded form rounds differently in the last bit, and near-ties of the logits then
    flip a few labels against the reference (measured: RSP-ViTAEv2-S, 2048², ``--exact``). The value map is skipped
    when it is the identity (8-bit rasters for 0-255 models), so such input is exactly the reference's.
    """

    mean: np.ndarray  # (C, 1, 1) float32
    std: np.ndarray  # (C, 1, 1) float32
    value_map: tuple[float, float, float] | None = None  # (raster low, k, model low): mlo + (x - rlo) * k; None = x

    @classmethod
    def create(cls, info: ModelInfo, raster_range: tuple[float, float]) -> Normalizer:
        """The normaliser for ``info``'s value range, mean and std, from raster values in ``raster_range``."""
        (rlo, rhi), (mlo, mhi) = raster_range, info.value_range
        k = (mhi - mlo) / (rhi - rlo)
        mean, std = (np.asarray(v, np.float32)[:, None, None] for v in (info.mean, info.std))
        identity = k == 1 and rlo == mlo
        return cls(mean, std, None if identity else (float(rlo), float(k), float(mlo)))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` raw → ``(C, h, w)`` float32 normalised."""
        x = raw.astype(np.float32)
        if self.value_map is not None:
            rlo, k, mlo = (np.float32(v) for v in self.value_map)
            x = (x - rlo) * k + mlo
        x -= self.mean
        x /= self.std
        return x


def read_valid_mask(ds: gdal.Dataset, bands: list[int], win: Window) -> np.ndarray:
    """``(h, w)`` bool: pixels valid in at least one mapped band (see the module docstring)."""
    valid = None
    for b in bands:
        band = ds.GetRasterBand(b)
        if band.GetMaskFlags() & gdal.GMF_ALL_VALID:
            return np.ones((win.height, win.width), bool)
        try:
            m = band.GetMaskBand().ReadAsArray(win.col, win.row, win.width, win.height) > 0
        except RuntimeError as exc:
            raise sources.read_error(exc, _pixels(win)) from exc
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
        raise sources.read_error(exc, _pixels(win)) from exc


def _pixels(win: Window) -> str:
    return f"rows {win.row}-{win.row + win.height}, columns {win.col}-{win.col + win.width} of the raster"


@contextlib.contextmanager
def bounded_gdal_cache() -> Iterator[None]:
    """Cap GDAL's block cache at :data:`GDAL_CACHE_BYTES` for the run (unless ``GDAL_CACHEMAX`` is set).

    GDAL's default is 5 % of the machine's RAM, and it fills it with the decompressed input blocks and the output's
    dirty blocks, so a run's memory would grow with the raster's area up to that cap (measured here: 2048² 743 MiB,
    8192² 1209 MiB peak RSS). The engine reads each input block about twice (window overlap) and writes rows once, so
    a small cache costs nothing.
    """
    if os.environ.get("GDAL_CACHEMAX"):
        yield
        return
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, GDAL_CACHE_BYTES))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)
