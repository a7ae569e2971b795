"""Data preparation of a fine-tuning run: rasters on the work grid, label rasters, the spatial split, the chips.

Everything is written into the work folder (``raster<i>.vrt`` when a raster is resampled, ``labels<i>.tif``), read
window by window, so memory does not grow with the rasters' size. The GSD is ``--gsd`` or the first raster's own;
rasters are resampled on read exactly as the engine does (``engine.raster_io.work_dataset``), so ``engine predict``
later reads the same pixels the network trained on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from osgeo import gdal

from engine import georef, raster_io
from engine.errors import ParameterError
from engine.tiling import Window
from training.finetune.chips import RasterSource
from training.finetune.classes import IGNORE, ClassTable
from training.finetune.labels import LabelSource
from training.finetune.split import (
    Split,
    block_windows,
    candidate_chips,
    check_sizes,
    chip_sizes,
    chips_per_block,
    choose_holdout,
    count_blocks,
    training_chips,
)

LABEL_CHUNK_ROWS = 512  # rows rasterised at a time into a label raster
LABEL_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]


@dataclass
class Prepared:
    """The data of a run: per raster its source, split and chips; the GSD (None without CRS), chip size, warnings."""

    sources: list[RasterSource]
    splits: list[Split]
    chips: list[tuple[int, Window]]
    rasters: list[str]
    labels: list[LabelSource]
    gsd_m: float | None
    chip: int  # training chip side (the tile, or smaller when a small labelled area needs it)
    warnings: list[str] = field(default_factory=list)


def pair_inputs(rasters: list[str], labels: list[str]) -> list[tuple[str, str]]:
    """``(raster, labels)`` pairs: one labels file per raster, or one for all."""
    if not rasters or not labels:
        raise ParameterError("give at least one --raster and one --labels")
    if len(labels) == 1:
        return [(r, labels[0]) for r in rasters]
    if len(labels) != len(rasters):
        raise ParameterError(
            f"{len(rasters)} --raster but {len(labels)} --labels", "give one --labels per --raster, or one for all"
        )
    return list(zip(rasters, labels, strict=True))


def target_gsd(first: gdal.Dataset, gsd: float | None) -> float | None:
    """``--gsd``, else the first raster's own pixel size (the mean of x and y), None without CRS."""
    if gsd is not None:
        if not gsd > 0:
            raise ParameterError(f"--gsd must be > 0 metres, got {gsd}")
        if georef.pixel_size_m(first) is None:
            raise ParameterError("--gsd needs a raster with a CRS (its pixel size in metres is unknown)")
        return float(gsd)
    size = georef.pixel_size_m(first)
    return None if size is None else round((size[0] + size[1]) / 2, 6)


def write_label_raster(labels: LabelSource, grid: gdal.Dataset, extent: Window, table: ClassTable, path: str) -> int:
    """Rasterise ``labels`` over ``extent`` of ``grid`` into a GeoTIFF at ``path``; returns labelled pixels."""
    drv = gdal.GetDriverByName("GTiff")
    out = drv.Create(path, extent.width, extent.height, 1, gdal.GDT_Byte, LABEL_OPTIONS)
    gt = grid.GetGeoTransform()
    c, r = extent.col, extent.row
    out.SetGeoTransform((gt[0] + c * gt[1] + r * gt[2], gt[1], gt[2], gt[3] + c * gt[4] + r * gt[5], gt[4], gt[5]))
    if grid.GetProjection():
        out.SetProjection(grid.GetProjection())
    band = out.GetRasterBand(1)
    band.SetNoDataValue(IGNORE)
    labelled = 0
    for y in range(0, extent.height, LABEL_CHUNK_ROWS):
        h = min(LABEL_CHUNK_ROWS, extent.height - y)
        block = labels.burn(grid, Window(extent.row + y, extent.col, h, extent.width), table)
        band.WriteArray(block, 0, y)
        labelled += int((block != IGNORE).sum())
    band = out = None  # band first: closing the dataset flushes it
    return labelled


def prepare_data(
    pairs: list[tuple[str, str]],
    class_field: str | None,
    table: ClassTable,
    label_sources: list[LabelSource],
    band_names: tuple[str, ...],
    value_range: tuple[float, float],
    bands: tuple[int, ...] | None,
    gsd: float | None,
    tile: int,
    block: int,
    val_fraction: float,
    seed: int,
    work_dir: str,
    check_cancel: Callable[[], None],
) -> Prepared:
    """Open the rasters, rasterise labels, split into blocks and chips (see the module docstring)."""
    opened = [raster_io.open_raster(r) for r, _ in pairs]
    gsd_m = target_gsd(opened[0], gsd)
    sources: list[RasterSource] = []
    splits: list[Split] = []
    chips: list[tuple[int, Window]] = []
    warnings: list[str] = []
    for i, ((raster, _), ds, labels) in enumerate(zip(pairs, opened, label_sources, strict=True)):
        check_cancel()
        band_list = raster_io.select_bands(ds, band_names, list(bands) if bands else None)
        rng = raster_io.input_range(ds, band_list, value_range, None)
        work = georef.work_dataset(ds, gsd_m)
        work_path = raster
        if work is not ds:
            work_path = os.path.join(work_dir, f"raster{i}.vrt")
            gdal.GetDriverByName("VRT").CreateCopy(work_path, work)
        extent = labels.pixel_extent(work)
        if extent is None:
            raise ParameterError(
                f"the labels {os.path.basename(labels.path)} and the raster {os.path.basename(raster)} do not overlap",
                "check that both are the same place (and that the labels' CRS is set correctly)",
            )
        label_path = os.path.join(work_dir, f"labels{i}.tif")
        if write_label_raster(labels, work, extent, table, label_path) == 0:
            raise ParameterError(
                f"no labelled pixels of the classes {list(table.names)} inside {os.path.basename(raster)}",
                "digitise polygons inside the raster (a pixel counts when its centre is inside a polygon)",
            )
        src = RasterSource(
            work_path, band_list, rng, value_range, label_path, extent, work.RasterXSize, work.RasterYSize
        )
        sources.append(src)
    blocks = [block_windows(s.label_extent, block) for s in sources]
    counts = [count_blocks(b, s.read_labels, table.num_classes) for b, s in zip(blocks, sources, strict=True)]
    for chip in chip_sizes(tile):  # a smaller chip when a small labelled area leaves no tile-sized one
        check_cancel()
        splits, chips = [], []
        for i, src in enumerate(sources):
            candidates = candidate_chips(src.label_extent, chip, src.read_labels, src.bounds)
            per_block = chips_per_block(blocks[i], candidates)
            split = Split(blocks[i], counts[i], choose_holdout(counts[i], val_fraction, seed + i, per_block))
            chips += [(i, w) for w in training_chips(candidates, split.holdout_blocks)]
            splits.append(split)
        if chips:
            break
    check_sizes(splits, gsd_m, val_fraction, block)
    if not chips:
        raise ParameterError(
            f"no {chip}×{chip} training chip fits between the held-out blocks",
            "digitise a larger area, or pass a smaller --tile",
        )
    if chip < tile:
        warnings.append(
            f"the labelled area leaves no {tile}×{tile} chip outside the held-out blocks: training on {chip}×{chip} "
            "chips (digitise a larger area for full-size chips)"
        )
    measured = sum((s.counts[s.holdout] > 0).any(axis=0) for s in splits)
    unmeasured = [n for n, m in zip(table.names, measured, strict=True) if not m]
    if unmeasured:
        warnings.append(
            f"no held-out block holds {', '.join(unmeasured)}: their accuracy is not measured (digitise them in more "
            "than one place)"
        )
    return Prepared(sources, splits, chips, [r for r, _ in pairs], label_sources, gsd_m, chip, warnings)
