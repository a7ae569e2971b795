"""The run's outputs: path checks, GeoTIFF creation, finishing, per-class statistics, and the final renames.

Finishing is the warp back to the source grid (resampled runs), colour table and class names, overviews or COG.

Outputs are written under the hidden temporary names of :mod:`engine.atomic` and renamed onto the requested paths
only when everything succeeded (:func:`commit_outputs`); :func:`remove_temporaries` removes them otherwise. Output
roles (``labels``, ``confidence``, ``vector``) are those of :mod:`engine.events`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from osgeo import gdal

from engine import events, faults, journal
from engine.atomic import commit, remove_with_sidecars
from engine.errors import OutputPathError
from engine.georef import get_srs, row_pixel_areas_m2, window_geotransform
from engine.model_file import ModelInfo
from engine.tiling import Window

gdal.UseExceptions()

log = logging.getLogger("engine")

OUTPUT_BLOCK = 256  # GeoTIFF tile size of the outputs
OVERVIEW_MIN_SIZE = 256  # build overviews until the smallest is below this size
GEOTIFF_OPTIONS = [
    "TILED=YES",
    f"BLOCKXSIZE={OUTPUT_BLOCK}",
    f"BLOCKYSIZE={OUTPUT_BLOCK}",
    "COMPRESS=DEFLATE",
    "BIGTIFF=IF_SAFER",
]
STATS_CHUNK_ROWS = 512  # rows read at a time when counting classes in the output
WORK_SUFFIX = ".work.tif"  # a raster on the work grid (resampled run or COG), before finishing
STAGE_SUFFIX = ".stage.tif"  # a finished GeoTIFF before its copy to COG
RASTER_ROLES = (events.LABELS, events.CONFIDENCE, events.UNCERTAINTY)  # the outputs a run writes row by row
DESCRIPTIONS = {
    events.CONFIDENCE: "confidence of the predicted class (0..1)",
    events.UNCERTAINTY: "uncertainty: 1 - (p1 - p2), one minus the margin of the two most probable classes (0..1)",
}


def check_output_path(path: str, overwrite: bool) -> None:
    """Check that ``path`` can be written: its folder exists and is writable, and it is absent unless ``overwrite``.

    Raises:
        OutputPathError: with a hint saying what to do.
    """
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


def output_paths(
    labels: str, confidence: str | None = None, vector: str | None = None, uncertainty: str | None = None
) -> dict[str, str]:
    """``{role: path}`` of the requested outputs (roles of :mod:`engine.events`; absent ones left out)."""
    outs = {events.LABELS: labels}
    if confidence:
        outs[events.CONFIDENCE] = confidence
    if uncertainty:
        outs[events.UNCERTAINTY] = uncertainty
    if vector:
        outs[events.VECTOR] = vector
    return outs


def polygon_confidence_path(labels: str) -> str:
    """The name a run writes the confidence under when only its polygons need it (``--vector`` without
    ``--confidence``): never created itself, only its hidden temporary and resume chunks are, and removed at the end.

    It starts with the class raster's chunk prefix (:func:`engine.journal.chunk_prefix`), so every hidden file
    derived from it (its temporary, its chunks, their debris) is also debris of the class raster: the cleanup that
    knows only the requested outputs (the plugin's, a next run's) finds them.
    """
    folder, name = os.path.split(os.path.abspath(labels))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f"{stem}{journal.PARTIAL_TAG}-polygon-confidence{ext}")


def work_paths(tmps: dict[str, str], direct: bool) -> dict[str, str]:
    """``{role: path}`` a single-process run writes its rasters to.

    Args:
        tmps: ``{role: path}`` of the temporary outputs.
        direct: the rasters are written on the source grid as plain GeoTIFFs, so straight to ``tmps``; else to
            scratch files next to them (:data:`WORK_SUFFIX`) that :func:`finish_rasters` turns into the outputs.
    """
    roles = [r for r in RASTER_ROLES if r in tmps]
    return {role: tmps[role] if direct else tmps[role] + WORK_SUFFIX for role in roles}


def create_geotiff(
    path: str, width: int, height: int, geotransform: tuple[float, ...], projection: str, dtype: int, nodata: float
) -> gdal.Dataset:
    """Create a tiled DEFLATE single-band GeoTIFF filled with ``nodata``.

    Raises:
        OutputPathError: GDAL cannot create the file.
    """
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
    """Overview factors 2, 4, 8… until the smallest overview is below :data:`OVERVIEW_MIN_SIZE` pixels."""
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


def finish_rasters(
    work: dict[str, str],
    tmps: dict[str, str],
    source: gdal.Dataset,
    region: Window,
    info: ModelInfo,
    *,
    resampled: bool,
    cog: bool,
    check_cancel: Callable[[], None],
    internal: tuple[str, ...] = (),
) -> None:
    """Turn the work-grid rasters into the final temporary outputs (on the source grid, styled, overviews or COG).

    Args:
        work: ``{role: path}`` of the rasters the run wrote (``labels``, optionally ``confidence``), on the work grid
            (or a VRT joining the parts of a distributed run).
        tmps: ``{role: path}`` of the temporary outputs to finish; a work raster may already be its temporary output.
        source: the input raster.
        region: the processed window of ``source``'s grid, which the outputs cover.
        info: class names and colours.
        resampled: the work grid is not the source grid (warp back, nearest neighbour).
        cog: write Cloud-Optimized GeoTIFFs.
        check_cancel: raises when the run was cancelled.
        internal: roles only the run itself reads (the polygons' confidence): plain GeoTIFFs, no overviews or COG.
    """
    for role, src in work.items():
        check_cancel()
        dst = tmps[role]
        as_cog = cog and role not in internal
        if not resampled and not src.endswith(".vrt"):
            staged = src  # written on the source grid already (single process)
        else:
            staged = dst if not as_cog else dst + STAGE_SUFFIX
        faults.point("tile_write")
        if src != staged and not resampled:  # a VRT on the source grid (chunks, or a distributed run's parts): copy
            gdal.Translate(staged, src, format="GTiff", creationOptions=GEOTIFF_OPTIONS)
        elif src != staged:
            gt = window_geotransform(source, region)
            bounds = (gt[0], gt[3] + gt[5] * region.height, gt[0] + gt[1] * region.width, gt[3])
            gdal.Warp(
                staged,
                src,
                format="GTiff",
                outputBounds=bounds,
                width=region.width,
                height=region.height,
                resampleAlg="nearest",
                creationOptions=GEOTIFF_OPTIONS,
                multithread=False,
            )
        ds = gdal.Open(staged, gdal.GA_Update)
        if role == events.LABELS:
            style_labels(ds, info)
            ds = None  # reopen so that the overview builder sees the colour table
            ds = gdal.Open(staged, gdal.GA_Update)
        else:
            ds.GetRasterBand(1).SetDescription(DESCRIPTIONS[role])
        if role in internal:
            ds = None
            if staged != dst:  # a COG run's work raster on the source grid
                os.replace(staged, dst)
            continue
        overview_resampling = "MODE" if role == events.LABELS else "AVERAGE"
        if not cog:
            levels = overview_levels(ds.RasterXSize, ds.RasterYSize)
            if levels:
                faults.point("overview")
                ds.BuildOverviews(overview_resampling, levels)
        faults.point("flush")
        ds = None
        if cog:
            faults.point("overview")
            to_cog(staged, dst, overview_resampling)
            if staged != src:
                remove_with_sidecars([staged])


def class_statistics(labels_path: str, info: ModelInfo, source: gdal.Dataset, region: Window) -> list[dict[str, Any]]:
    """Per-class pixel counts and ground areas of a class raster covering ``region`` of ``source``.

    Read in chunks of :data:`STATS_CHUNK_ROWS` rows; areas use each row's own pixel area.

    Returns:
        Per class ``{"id", "name", "pixels", "area_m2"}`` (``area_m2`` in m², rounded to mm²; None without CRS).
    """
    ds = gdal.Open(labels_path)
    band = ds.GetRasterBand(1)
    k = info.num_classes
    pixels = np.zeros(k, np.int64)
    area = np.zeros(k, np.float64)
    has_area = get_srs(source) is not None
    for y in range(0, ds.RasterYSize, STATS_CHUNK_ROWS):
        h = min(STATS_CHUNK_ROWS, ds.RasterYSize - y)
        block = band.ReadAsArray(0, y, ds.RasterXSize, h)
        per_row = np.stack([np.bincount(row[row < k], minlength=k) for row in block])  # (h, K)
        pixels += per_row.sum(axis=0)
        if has_area:
            areas = row_pixel_areas_m2(source, np.arange(region.row + y, region.row + y + h))
            assert areas is not None
            area += (per_row * areas[:, None]).sum(axis=0)
    return [
        {
            "id": i,
            "name": info.class_names[i],
            "pixels": int(pixels[i]),
            "area_m2": round(float(area[i]), 3) if has_area else None,
        }
        for i in range(k)
    ]


def pixel_area_m2(source: gdal.Dataset, region: Window) -> float | None:
    """Ground area of one ``source`` pixel at ``region``'s centre row (m²), None without CRS."""
    a = row_pixel_areas_m2(source, np.array([region.row + region.height // 2]))
    return None if a is None else float(a[0])


def commit_outputs(tmps: dict[str, str], finals: dict[str, str]) -> None:
    """Rename each temporary output ``tmps[role]`` onto ``finals[role]`` (see :func:`engine.atomic.commit`)."""
    for role, tmp in tmps.items():
        commit(tmp, finals[role])


def remove_temporaries(paths: list[str]) -> None:
    """Remove temporary outputs and scratch rasters with their sidecars and COG stages; a failure is only logged."""
    for p in paths:
        try:
            remove_with_sidecars([p, p + STAGE_SUFFIX])
        except OSError:
            log.warning("could not remove temporary file %s", p)
