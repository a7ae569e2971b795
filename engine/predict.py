"""The engine's Python API: segment a GDAL raster with a model file into georeferenced outputs.

One code path for the CLI (``python -m engine predict``), the QGIS plugin, training evaluation and benchmarks::

    from engine.predict import PredictRequest, predict
    result = predict(PredictRequest(model="m.rspmodel", input="in.tif", output="out.tif"),
                     on_event=print, cancel=threading.Event())

Pipeline: windows of the raster-anchored grid (:mod:`engine.tiling`) are read and normalised by a prefetching
reader thread, run through the network in batches under ``torch.inference_mode``, blended into a band of ``tile``
rows (:mod:`engine.blending`), and finished rows are handed to a writer thread that writes them to the outputs under
temporary names. At the end: warp back to the source grid when the raster was resampled to the model's GSD, colour
table and class names, overviews (or a COG), polygons, per-class pixel counts and areas, then the renames.

Events passed to ``on_event`` (the CLI prints them as JSON lines): ``start``, ``status`` (``message``: a long step
without progress, such as compiling the network), ``progress`` (``done``, ``total`` windows, ``eta_s``), ``done``
(``outputs``, ``classes``: ``id``, ``name``, ``pixels``, ``area_m2``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from osgeo import gdal

from engine import raster_io
from engine.atomic import temporary_path
from engine.blending import CONFIDENCE_NODATA, LABEL_NODATA, BandAccumulator, FinishedRows, check_blend
from engine.errors import CancelledError, OutputPathError, ParameterError
from engine.masks import PolygonMask
from engine.model_file import ModelInfo, read_model_info
from engine.tiling import TilingError, Window, windows_for_region

log = logging.getLogger("engine")

EventCallback = Callable[[dict[str, Any]], None]
PREFETCH_BATCHES = 2  # batches the reader thread may read ahead
GDAL_CACHE_BYTES = 128 * 2**20  # GDAL block cache during a run (see bounded_gdal_cache)
WRITER_QUEUE = 4  # finished row bands waiting for the writer thread
STATS_CHUNK_ROWS = 512  # rows read at a time when counting classes in the output


MIN_TILE = 32  # the networks downsample by 32
MAX_TILE = 8192  # one window's logits must fit in memory


@dataclass(frozen=True)
class PredictRequest:
    """What to segment and where to write it (mirrors ``python -m engine predict``'s options).

    Attributes:
        model: model file (``.rspmodel``).
        input: GDAL-readable raster.
        output: class-id GeoTIFF to write (uint8, nodata 255).
        vector: optional GeoPackage of polygons (``class_id``, ``class_name``, ``area_m2``).
        confidence: optional float32 GeoTIFF of the chosen class's probability (nodata -1).
        window: pixel window ``(xoff, yoff, xsize, ysize)`` of the source raster (GDAL order).
        bbox: ``(xmin, ymin, xmax, ymax)`` in ``bbox_crs`` (default: the raster's CRS).
        mask: vector file whose polygons limit the processed area (pixels outside are nodata).
        bands: 1-based raster bands feeding the model's inputs in order (default: by colour interpretation).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; None = CUDA when available, else CPU.
        batch_size: windows per forward pass.
        threads: ``torch.set_num_threads`` (None = torch's default).
        tile, stride: window size and step in pixels (default: the model file's).
        blend: ``"smooth"`` or ``"reference"`` (see :mod:`engine.blending`).
        compile: ``"auto"``, ``"on"`` or ``"off"``: run the network through ``torch.compile`` (see
            :func:`engine.inference.compile_for_run`; ``auto`` compiles large CPU runs when a C++ compiler exists).
        exact: keep the reference code's float order in the decode head. Default False: the head's low-resolution
            fusion (:meth:`engine.models.segmentor.UperNet.set_lowres_fusion`), the same function ≈ 1.3× faster,
            logits within ≈ 1e-6 of the reference's.
        value_max: raster value that maps to the top of the model's value range (default: see
            :func:`engine.raster_io.input_range`).
        min_area: polygons smaller than this (m², or pixels when the raster has no CRS) are merged into their
            neighbours before vectorising.
        simplify: polygon simplification tolerance in ground metres (0 = none).
        cog: write the class raster (and confidence) as Cloud-Optimized GeoTIFF.
        overwrite: replace existing outputs.
    """

    model: str
    input: str
    output: str
    vector: str | None = None
    confidence: str | None = None
    window: tuple[int, int, int, int] | None = None
    bbox: tuple[float, float, float, float] | None = None
    bbox_crs: str | None = None
    mask: str | None = None
    bands: tuple[int, ...] | None = None
    device: str | None = None
    batch_size: int = 4
    threads: int | None = None
    tile: int | None = None
    stride: int | None = None
    blend: str = "smooth"
    exact: bool = False
    compile: str = "auto"
    value_max: float | None = None
    min_area: float = 0.0
    simplify: float = 0.0
    cog: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.window, self.bbox)) > 1:
            raise ParameterError("give at most one of --window and --bbox")
        if self.compile not in ("auto", "on", "off"):
            raise ParameterError(f"--compile must be auto, on or off, got {self.compile!r}")
        if self.batch_size < 1:
            raise ParameterError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.tile is not None and not MIN_TILE <= self.tile <= MAX_TILE:
            raise ParameterError(f"--tile must be in {MIN_TILE}..{MAX_TILE} pixels, got {self.tile}")
        if self.stride is not None and self.stride < 1:
            raise ParameterError(f"--stride must be >= 1, got {self.stride}")
        if self.value_max is not None and not self.value_max > 0:
            raise ParameterError(f"--value-max must be > 0, got {self.value_max}")
        if self.threads is not None and self.threads < 1:
            raise ParameterError(f"--threads must be >= 1, got {self.threads}")
        if self.min_area < 0 or self.simplify < 0:
            raise ParameterError("--min-area and --simplify must be >= 0")
        try:
            check_blend(self.blend)
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        outs = [os.path.abspath(p) for p in (self.output, self.vector, self.confidence) if p]
        if len(set(outs)) != len(outs) or os.path.abspath(self.input) in outs:
            raise ParameterError("--output, --vector, --confidence and --input must be different files")


@dataclass
class PredictResult:
    """What a run produced.

    Attributes:
        outputs: ``{"labels": path, "confidence": path?, "vector": path?}``.
        classes: per class ``{"id", "name", "pixels", "area_m2"}`` (``area_m2`` None without CRS).
        windows: windows run through the network (fully masked windows are skipped and not counted).
        seconds: wall time of the run.
    """

    outputs: dict[str, str]
    classes: list[dict[str, Any]]
    windows: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything prepared once per run (shared by the single-process and distributed paths)."""

    request: PredictRequest
    info: ModelInfo
    tile: int
    stride: int
    source: gdal.Dataset
    work: gdal.Dataset
    bands: list[int]
    normalizer: raster_io.Normalizer
    region_src: Window  # on the source grid
    region_work: Window  # on the work grid (= region_src when not resampled)
    polygons: PolygonMask | None
    on_event: EventCallback
    cancel: threading.Event

    @property
    def resampled(self) -> bool:
        return self.work is not self.source

    def emit(self, event: str, **fields: Any) -> None:
        self.on_event({"event": event, **fields})

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise CancelledError("cancelled")


def prepare(
    request: PredictRequest, on_event: EventCallback | None = None, cancel: threading.Event | None = None
) -> RunContext:
    """Validate the request against the model file and raster; nothing is written."""
    for path in (request.output, request.vector, request.confidence):
        if path:
            raster_io.check_output_path(path, request.overwrite)
    info = read_model_info(request.model)
    tile = request.tile if request.tile is not None else info.tile_size
    stride = request.stride if request.stride is not None else info.stride
    if request.stride is None and request.tile is not None:
        stride = min(stride, tile)
    if not (1 <= stride <= tile):
        raise ParameterError(f"--stride must be in 1..--tile ({tile}), got {stride}")
    if info.num_classes > LABEL_NODATA:
        raise ParameterError(f"{info.num_classes} classes do not fit a uint8 raster with nodata {LABEL_NODATA}")
    source = raster_io.open_raster(request.input)
    if raster_io.get_srs(source) is None:
        log.warning("%s has no CRS: outputs carry its geotransform only and areas are unknown", request.input)
    bands = raster_io.select_bands(source, info, list(request.bands) if request.bands else None)
    normalizer = raster_io.Normalizer.create(info, raster_io.input_range(source, bands, info, request.value_max))
    work = raster_io.work_dataset(source, info.gsd_m)

    full = Window(0, 0, source.RasterYSize, source.RasterXSize)
    if request.window is not None:
        xoff, yoff, xsize, ysize = request.window
        region = Window(yoff, xoff, ysize, xsize).intersection(full)
        if region is None or xsize < 1 or ysize < 1:
            raise ParameterError(f"--window {request.window} is not inside the {full.width}×{full.height} raster")
    elif request.bbox is not None:
        region = raster_io.bbox_to_window(source, request.bbox, request.bbox_crs)
    else:
        region = full
    polygons = None
    if request.mask:
        polygons = PolygonMask(request.mask, source)
        box = polygons.pixel_window(source).intersection(region)
        if box is None:
            raise ParameterError(f"the polygons of {request.mask} do not overlap the raster (or the chosen extent)")
        region = box
    return RunContext(
        request,
        info,
        tile,
        stride,
        source,
        work,
        bands,
        normalizer,
        region,
        to_work_window(region, source, work),
        polygons,
        on_event or (lambda e: None),
        cancel or threading.Event(),
    )


def to_work_window(region: Window, source: gdal.Dataset, work: gdal.Dataset) -> Window:
    """The work-grid pixels covering a source-grid ``region`` (identity when not resampled)."""
    if work is source:
        return region
    fy, fx = work.RasterYSize / source.RasterYSize, work.RasterXSize / source.RasterXSize
    r0, c0 = math.floor(region.row * fy), math.floor(region.col * fx)
    r1 = min(max(math.ceil(region.row_end * fy), r0 + 1), work.RasterYSize)
    c1 = min(max(math.ceil(region.col_end * fx), c0 + 1), work.RasterXSize)
    return Window(r0, c0, r1 - r0, c1 - c0)


def window_geotransform(ds: gdal.Dataset, win: Window) -> tuple[float, ...]:
    gt = ds.GetGeoTransform()
    return (
        gt[0] + win.col * gt[1] + win.row * gt[2],
        gt[1],
        gt[2],
        gt[3] + win.col * gt[4] + win.row * gt[5],
        gt[4],
        gt[5],
    )


# ------------------------------------------------------------------------------------------------------ reader thread
@dataclass
class _Item:
    window: Window
    data: np.ndarray | None  # (C, tile, tile) normalised, None = fully masked (skipped)
    valid: np.ndarray | None  # (h, w) bool


def _read_items(ctx: RunContext, windows: list[Window]) -> Iterator[_Item]:
    t = ctx.tile
    for w in windows:
        ctx.check_cancel()
        valid = raster_io.read_valid_mask(ctx.work, ctx.bands, w)
        # Polygons only decide what is written and which windows run: the network still sees the real pixels
        # around them, so labels inside equal those of a whole-raster run.
        wanted = valid & ctx.polygons.rasterize(ctx.work, w) if ctx.polygons is not None else valid
        if not wanted.any():
            yield _Item(w, None, None)
            continue
        x = ctx.normalizer(raster_io.read_window(ctx.work, ctx.bands, w))  # (C, h, w)
        x[:, ~valid] = 0.0  # nodata/alpha-masked pixels enter as the mean value
        padded = np.zeros((x.shape[0], t, t), np.float32)  # square input, also for rasters smaller than a tile
        padded[:, : w.height, : w.width] = x
        yield _Item(w, padded, wanted)


def _prefetch(source: Iterator[_Item], size: int, cancel: threading.Event) -> Iterator[_Item]:
    """Run ``source`` in a thread, ``size`` items ahead; re-raises its exception in the caller."""
    q: queue.Queue[Any] = queue.Queue(maxsize=size)
    end = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, name="engine-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------------ writer thread
class _Writer:
    """Writes finished row bands to the (temporary) class and confidence rasters from a thread."""

    def __init__(self, labels: gdal.Dataset, confidence: gdal.Dataset | None, region: Window) -> None:
        self.labels, self.confidence, self.region = labels, confidence, region
        self.q: queue.Queue[FinishedRows | None] = queue.Queue(maxsize=WRITER_QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="engine-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            rows = self.q.get()
            if rows is None:
                return
            if self.error is not None:
                continue
            try:
                y = rows.row - self.region.row
                self.labels.GetRasterBand(1).WriteArray(rows.labels, 0, y)
                if self.confidence is not None:
                    self.confidence.GetRasterBand(1).WriteArray(rows.confidence, 0, y)
            except BaseException as exc:
                self.error = exc

    def put(self, rows: FinishedRows | None) -> None:
        if self.error is not None:
            raise OutputPathError(
                f"writing the output failed: {self.error}", "free disk space or choose another output folder"
            )
        if rows is not None:
            self.q.put(rows)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise OutputPathError(
                f"writing the output failed: {self.error}", "free disk space or choose another output folder"
            )


# -------------------------------------------------------------------------------------------------------- inference
def load_network(ctx: RunContext) -> tuple[Any, Any]:
    """(model, torch.device) for the request, with ``torch.set_num_threads`` applied."""
    import torch

    from engine.inference import check_compile_mode
    from engine.model_file import load_model_file

    req = ctx.request
    if req.threads:
        torch.set_num_threads(req.threads)
    name = req.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError("--device cuda asked but CUDA is not available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ParameterError(f"unknown --device {name!r}; use cpu or cuda")
    device = torch.device(name)
    model, _ = load_model_file(req.model, device=name)
    model.set_lowres_fusion(not req.exact)
    try:
        check_compile_mode(req.compile, device.type == "cpu")
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc
    return model, device


def run_region(
    ctx: RunContext,
    model: Any,
    device: Any,
    region: Window,
    labels_path: str,
    confidence_path: str | None,
    progress: Callable[[int, int], None],
) -> int:
    """Predict ``region`` of the work grid into GeoTIFFs at ``labels_path`` (and ``confidence_path``).

    Returns:
        the number of windows run through the network.
    """
    from engine.inference import compile_for_run, run_windows

    try:
        windows = windows_for_region(ctx.work.RasterYSize, ctx.work.RasterXSize, ctx.tile, ctx.stride, region)
    except TilingError as exc:
        raise ParameterError(str(exc)) from exc
    net = compile_for_run(model, ctx.request.compile, len(windows), ctx.request.batch_size)
    if net is not model:
        ctx.emit("status", message="compiling the network (the first time per network and batch size: 1-2 min)")
    gt, proj = window_geotransform(ctx.work, region), ctx.work.GetProjection()
    labels = raster_io.create_geotiff(labels_path, region.width, region.height, gt, proj, gdal.GDT_Byte, LABEL_NODATA)
    conf = None
    if confidence_path:
        conf = raster_io.create_geotiff(
            confidence_path, region.width, region.height, gt, proj, gdal.GDT_Float32, CONFIDENCE_NODATA
        )
    writer = _Writer(labels, conf, region)
    acc = BandAccumulator(region, ctx.info.num_classes, ctx.tile, ctx.request.blend)
    total, done, ran = len(windows), 0, 0
    batch: list[_Item] = []
    current_grid_row = windows[0].grid_row
    items = _prefetch(_read_items(ctx, windows), PREFETCH_BATCHES * ctx.request.batch_size, ctx.cancel)

    def flush(batch: list[_Item]) -> None:
        nonlocal done, ran, current_grid_row
        runnable = [it for it in batch if it.data is not None]
        outputs = run_windows(net, np.stack([it.data for it in runnable]), device) if runnable else None  # type: ignore[misc]
        k = 0
        for it in batch:
            if it.window.grid_row != current_grid_row:
                writer.put(acc.advance_to(it.window.row))
                current_grid_row = it.window.grid_row
            if it.data is not None:
                assert outputs is not None
                w = it.window
                acc.add(w, outputs[k, :, : w.height, : w.width], it.valid)
                k += 1
        done += len(batch)
        ran += len(runnable)
        progress(done, total)

    try:
        for item in items:
            batch.append(item)
            if sum(it.data is not None for it in batch) >= ctx.request.batch_size:
                ctx.check_cancel()
                flush(batch)
                batch = []
        if batch:
            ctx.check_cancel()
            flush(batch)
        writer.put(acc.finish())
    finally:
        items.close()  # type: ignore[attr-defined]
        writer.close()
        writer.labels = writer.confidence = None  # type: ignore[assignment]
        labels = conf = None  # closes the files
    return ran


# ------------------------------------------------------------------------------------------------------- finishing
def finish_outputs(ctx: RunContext, work_labels: str, work_conf: str | None, tmps: dict[str, str]) -> None:
    """Turn work-grid rasters into the final temporary outputs ``tmps`` (on the source grid, styled, overviews)."""
    req = ctx.request
    targets = [("labels", work_labels, "nearest")] + ([("confidence", work_conf, "nearest")] if work_conf else [])
    for key, src, resampling in targets:
        ctx.check_cancel()
        dst = tmps[key]
        if not ctx.resampled and not src.endswith(".vrt"):
            staged = src  # written on the source grid already (single process)
        else:
            staged = dst if not req.cog else dst + ".stage.tif"
        if src != staged:
            gt = window_geotransform(ctx.source, ctx.region_src)
            r = ctx.region_src
            bounds = (gt[0], gt[3] + gt[5] * r.height, gt[0] + gt[1] * r.width, gt[3])
            gdal.Warp(
                staged,
                src,
                format="GTiff",
                outputBounds=bounds,
                width=r.width,
                height=r.height,
                resampleAlg=resampling,
                creationOptions=raster_io.GEOTIFF_OPTIONS,
                multithread=False,
            )
        ds = gdal.Open(staged, gdal.GA_Update)
        if key == "labels":
            raster_io.style_labels(ds, ctx.info)
            ds = None  # reopen so that the overview builder sees the colour table
            ds = gdal.Open(staged, gdal.GA_Update)
        else:
            ds.GetRasterBand(1).SetDescription("confidence of the predicted class (0..1)")
        overview_resampling = "MODE" if key == "labels" else "AVERAGE"
        if not req.cog:
            levels = raster_io.overview_levels(ds.RasterXSize, ds.RasterYSize)
            if levels:
                ds.BuildOverviews(overview_resampling, levels)
        ds = None
        if req.cog:
            raster_io.to_cog(staged, dst, overview_resampling)
            if staged != src:
                raster_io.remove_dataset_files(staged)


def class_statistics(ctx: RunContext, labels_path: str) -> list[dict[str, Any]]:
    """Per-class pixel counts and ground areas of a (source-grid) class raster, read in row chunks."""
    ds = gdal.Open(labels_path)
    band = ds.GetRasterBand(1)
    k = ctx.info.num_classes
    pixels = np.zeros(k, np.int64)
    area = np.zeros(k, np.float64)
    has_area = raster_io.get_srs(ctx.source) is not None
    for y in range(0, ds.RasterYSize, STATS_CHUNK_ROWS):
        h = min(STATS_CHUNK_ROWS, ds.RasterYSize - y)
        block = band.ReadAsArray(0, y, ds.RasterXSize, h)
        per_row = np.stack([np.bincount(row[row < k], minlength=k) for row in block])  # (h, K)
        pixels += per_row.sum(axis=0)
        if has_area:
            rows = np.arange(ctx.region_src.row + y, ctx.region_src.row + y + h)
            areas = raster_io.row_pixel_areas_m2(ctx.source, rows)
            assert areas is not None
            area += (per_row * areas[:, None]).sum(axis=0)
    return [
        {
            "id": i,
            "name": ctx.info.class_names[i],
            "pixels": int(pixels[i]),
            "area_m2": round(float(area[i]), 3) if has_area else None,
        }
        for i in range(k)
    ]


def pixel_area_m2(ctx: RunContext) -> float | None:
    """Ground area of one source pixel at the region's centre row (m²), None without CRS."""
    a = raster_io.row_pixel_areas_m2(ctx.source, np.array([ctx.region_src.row + ctx.region_src.height // 2]))
    return None if a is None else float(a[0])


class _Progress:
    """Turns (done, total) into throttled ``progress`` events with an ETA."""

    def __init__(self, ctx: RunContext, min_interval_s: float = 0.2) -> None:
        self.ctx, self.t0, self.last, self.min_interval = ctx, time.monotonic(), 0.0, min_interval_s

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.min_interval:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else None
        self.ctx.emit("progress", done=done, total=total, eta_s=None if eta is None else round(eta, 1))


def start_event(ctx: RunContext, total: int, device: Any) -> None:
    r = ctx.region_src
    ctx.emit(
        "start",
        input=ctx.request.input,
        model=ctx.request.model,
        arch=ctx.info.arch,
        device=str(device),
        width=ctx.source.RasterXSize,
        height=ctx.source.RasterYSize,
        region={"xoff": r.col, "yoff": r.row, "xsize": r.width, "ysize": r.height},
        resampled=ctx.resampled,
        work_size=[ctx.work.RasterXSize, ctx.work.RasterYSize],
        tile=ctx.tile,
        stride=ctx.stride,
        blend=ctx.request.blend,
        bands=ctx.bands,
        total=total,
    )


def output_paths(req: PredictRequest) -> dict[str, str]:
    outs = {"labels": req.output}
    if req.confidence:
        outs["confidence"] = req.confidence
    if req.vector:
        outs["vector"] = req.vector
    return outs


def complete(
    ctx: RunContext, work_labels: str, work_conf: str | None, tmps: dict[str, str], ran: int, t0: float
) -> PredictResult:
    """Finish outputs, vectorise, count classes, rename temporary files to their final names, emit ``done``."""
    from engine.vectorize import polygonize

    req = ctx.request
    finish_outputs(ctx, work_labels, work_conf, tmps)
    classes = class_statistics(ctx, tmps["labels"])
    if req.vector:
        ctx.check_cancel()
        polygonize(tmps["labels"], tmps["vector"], ctx.info, ctx.source, pixel_area_m2(ctx), req.min_area, req.simplify)
    ctx.check_cancel()
    finals = output_paths(req)
    for key, tmp in tmps.items():
        raster_io.commit_dataset(tmp, finals[key])
    result = PredictResult(finals, classes, ran, round(time.monotonic() - t0, 3))
    ctx.emit("done", outputs=finals, classes=classes, windows=ran, seconds=result.seconds)
    return result


def cleanup(paths: list[str]) -> None:
    for p in paths:
        try:
            raster_io.remove_dataset_files(p)
            raster_io.remove_dataset_files(p + ".stage.tif")
        except OSError:
            log.warning("could not remove temporary file %s", p)


def predict(
    request: PredictRequest,
    on_event: EventCallback | None = None,
    cancel: threading.Event | None = None,
    network: tuple[Any, Any] | None = None,
) -> PredictResult:
    """Segment ``request.input`` into ``request.output`` (and the optional outputs); see the module docstring.

    Args:
        request: what to do.
        on_event: called with each event dict (``start``, ``progress``, ``done``) from the calling thread.
        cancel: set it (from any thread) to stop; :class:`engine.errors.CancelledError` is raised and no output is
            left behind.
        network: an already loaded ``(model, torch.device)`` (benchmarks); default: loaded from ``request.model``.

    Raises:
        engine.errors.EngineError subclasses and ``engine.model_file.ModelFileError``; outputs are then absent.
    """
    with bounded_gdal_cache():
        return _predict(request, on_event, cancel, network)


@contextlib.contextmanager
def bounded_gdal_cache() -> Iterator[None]:
    """Cap GDAL's block cache at :data:`GDAL_CACHE_BYTES` for the run (unless ``GDAL_CACHEMAX`` is set).

    GDAL's default is 5 % of the machine's RAM, and it fills it with the decompressed input blocks and the output's
    dirty blocks, so a run's memory would grow with the raster's area up to that cap (measured here: 2048² 743 MiB,
    8192² 1209 MiB peak RSS). The engine reads each input block about twice (window overlap) and writes rows once, so
    a small cache costs nothing."""
    if os.environ.get("GDAL_CACHEMAX"):
        yield
        return
    previous = gdal.GetCacheMax()
    gdal.SetCacheMax(min(previous, GDAL_CACHE_BYTES))
    try:
        yield
    finally:
        gdal.SetCacheMax(previous)


def _predict(
    request: PredictRequest,
    on_event: EventCallback | None,
    cancel: threading.Event | None,
    network: tuple[Any, Any] | None,
) -> PredictResult:
    t0 = time.monotonic()
    ctx = prepare(request, on_event, cancel)
    model, device = network or load_network(ctx)
    tmps = {key: temporary_path(path) for key, path in output_paths(request).items()}
    work_labels = tmps["labels"] if not (ctx.resampled or request.cog) else tmps["labels"] + ".work.tif"
    work_conf = None
    if request.confidence:
        work_conf = tmps["confidence"] if not (ctx.resampled or request.cog) else tmps["confidence"] + ".work.tif"
    scratch = [p for p in (work_labels, work_conf) if p and p not in tmps.values()]
    try:
        total = len(
            windows_for_region(ctx.work.RasterYSize, ctx.work.RasterXSize, ctx.tile, ctx.stride, ctx.region_work)
        )
        start_event(ctx, total, device)
        ran = run_region(ctx, model, device, ctx.region_work, work_labels, work_conf, _Progress(ctx))
        result = complete(ctx, work_labels, work_conf, tmps, ran, t0)
    except BaseException:
        cleanup(list(tmps.values()) + scratch)
        raise
    cleanup(scratch)
    return result
