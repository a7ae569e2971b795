"""The engine's Python API: segment a GDAL raster with a model file into georeferenced outputs.

One code path for the CLI (``python -m engine predict``), the QGIS plugin, training evaluation and benchmarks::

    from engine.predict import PredictRequest, predict
    result = predict(PredictRequest(model="m.rspmodel", input="in.tif", output="out.tif"),
                     on_event=print, cancel=threading.Event())

This module holds the orchestration of one run, in the order it happens: validate the request
(:class:`PredictRequest`), :func:`prepare` it against the model file and the raster (bands, value scale, work grid,
region), load the network (:func:`engine.inference.load_network`), :func:`run_region` (windows of the
raster-anchored grid from :mod:`engine.tiling`, read ahead by :mod:`engine.streaming`'s reader thread, run through
the network in batches, blended into a band of rows by :mod:`engine.blending`, finished rows written by the writer
thread under temporary names), then :func:`complete` (:mod:`engine.outputs`: warp back to the source grid when the
raster was resampled to the model's GSD, colour table and class names, overviews or COG; polygons by
:mod:`engine.vectorize`; per-class pixel counts and areas; the renames).

Events passed to ``on_event`` (the CLI prints them as JSON lines; names and fields in :mod:`engine.events`):
``start`` (a resumed run adds ``resumed_from_row`` and ``whole_total``, the windows of the whole region; its
``total`` counts only the windows it computes), ``status`` (``message``: a long step without progress, such as
compiling the network), ``warning`` (``message``: e.g. out of memory, the batch halved), ``progress`` (``done``,
``total`` windows, ``eta_s``), ``done`` (``outputs``, ``classes``: ``id``, ``name``, ``pixels``, ``area_m2``).

Reliability (:mod:`engine.journal`, :mod:`engine.resume`, :mod:`engine.resources`): a run holds a lock on its
outputs (a second run on them is refused at once), checks free disk space before it starts, keeps a journal of the
rows durably written so that ``resume=True`` continues a run that was killed, cancelled or failed, and halves the
batch when the network runs out of memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine import events, georef, journal, outputs, raster_io, resources, resume, sources, streaming
from engine.atomic import remove_with_sidecars, stale_temporaries, temporary_path
from engine.blending import LABEL_NODATA, BandAccumulator
from engine.chunks import RASTER_TYPES
from engine.errors import OutputPathError, ParameterError
from engine.events import EventCallback, ProgressEvents
from engine.journal import OutputLock
from engine.masks import PolygonMask
from engine.model_file import read_model_info
from engine.request import PredictRequest, PredictResult, RunContext
from engine.resume import RunState, keep_rows
from engine.tiling import TilingError, Window, pass_size, windows_for_region

__all__ = ["EventCallback", "PredictRequest", "PredictResult", "ProgressEvents", "RunContext", "predict"]

log = logging.getLogger("engine")

MOSAIC_SUFFIX = ".chunks.vrt"  # next to a temporary output: the VRT of its chunks (engine.chunks)


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
    with raster_io.bounded_gdal_cache():
        return _predict(request, on_event, cancel, network)


def _predict(
    request: PredictRequest,
    on_event: EventCallback | None,
    cancel: threading.Event | None,
    network: tuple[Any, Any] | None,
) -> PredictResult:
    t0 = time.monotonic()
    from engine.inference import call_abandonable  # torch is imported when a run needs it, not with the API

    ctx = prepare(request, on_event, cancel)
    with OutputLock(list(request.output_paths().values())):  # a second run on these outputs is refused at once
        resume.check_run_fits(ctx, resume.resumable_bytes(request))  # before anything else reads the raster or writes
        remove_with_sidecars(stale_temporaries(list(request.run_paths().values())))  # a killed run's
        state = RunState.open(ctx)
        model, device = network or call_abandonable(lambda: load_run_network(ctx), ctx.cancel, "rsp-load")
        tmps = {role: temporary_path(path) for role, path in request.run_paths().items()}
        mosaics = {role: tmps[role] + MOSAIC_SUFFIX for role in state.outputs}
        work = outputs.work_paths(tmps, direct=not (ctx.resampled or request.cog))
        scratch = [p for p in [*work.values(), *mosaics.values()] if p not in tmps.values()]
        try:
            whole = region_windows(ctx, ctx.region_work)
            windows = state.windows(whole)
            resumed = {"resumed_from_row": state.rows_done, "whole_total": len(whole)} if state.resumed else {}
            start_event(ctx, len(windows), device, **resumed)
            ran = run_region(ctx, model, device, ctx.region_work, windows, {}, ProgressEvents(ctx.on_event),
                             state=state, whole=len(whole))  # fmt: skip
            result = complete(ctx, state.assemble(mosaics), tmps, ran, t0, commit=state.commit)
        except BaseException as exc:
            outputs.remove_temporaries(list(tmps.values()) + scratch)
            state.abandon(exc)
            raise
        outputs.remove_temporaries(scratch)
    return result


def prepare(
    request: PredictRequest, on_event: EventCallback | None = None, cancel: threading.Event | None = None
) -> RunContext:
    """Validate the request against the model file and raster; nothing is written.

    Raises:
        engine.errors.EngineError subclasses and ``engine.model_file.ModelFileError``.
    """
    # A resumed run whose predecessor was killed while renaming its outputs may replace those (they are its own).
    overwrite = request.overwrite or (request.resume and journal.committing(request.output))
    for path in request.output_paths().values():
        outputs.check_output_path(path, overwrite)
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
    region = georef.requested_window(source, request.window, request.bbox, request.bbox_crs)
    source, region = sources.clip_web_service(source, region, request.window is not None or request.bbox is not None)
    if georef.get_srs(source) is None:
        log.warning("%s has no CRS: outputs carry its geotransform only and areas are unknown", request.input)
    bands = raster_io.select_bands(source, info.bands, list(request.bands) if request.bands else None)
    normalizer = raster_io.Normalizer.create(
        info, raster_io.input_range(source, bands, info.value_range, request.value_max)
    )
    work = georef.work_dataset(source, georef.target_gsd(request.gsd, info.gsd_m, source))
    polygons = None
    if request.mask:
        polygons = PolygonMask(request.mask, source)
        box = polygons.pixel_window(source).intersection(region)
        if box is None:
            raise ParameterError(f"the polygons of {request.mask} do not overlap the raster (or the chosen extent)")
        region = box
    region_work = georef.covering_window(region, source, work)
    emit, stop = on_event or (lambda e: None), cancel or threading.Event()
    return RunContext(
        request, info, tile, stride, source, work, bands, normalizer, region, region_work, polygons, emit, stop
    )


def load_run_network(ctx: RunContext) -> tuple[Any, Any]:
    """``(model, torch.device)`` for the run's request (:func:`engine.inference.load_network`; metadata not re-read)."""
    from engine.inference import load_network

    req = ctx.request
    return load_network(
        req.model, req.device, threads=req.threads, exact=req.exact, compile_mode=req.compile, info=ctx.info
    )


def region_windows(ctx: RunContext, region: Window) -> list[Window]:
    """The windows of the work grid's raster-anchored grid that cover ``region`` (see :mod:`engine.tiling`)."""
    try:
        return windows_for_region(ctx.work.RasterYSize, ctx.work.RasterXSize, ctx.tile, ctx.stride, region)
    except TilingError as exc:
        raise ParameterError(str(exc)) from exc


def start_event(ctx: RunContext, total: int, device: Any, **extra: Any) -> None:
    """Emit the ``start`` event: what runs where, the ``total`` number of windows, and ``extra`` fields."""
    r = ctx.region_src
    ctx.emit(
        events.START,
        input=ctx.request.input,
        model=ctx.request.model,
        arch=ctx.info.arch,
        device=str(device),
        width=ctx.source.RasterXSize,
        height=ctx.source.RasterYSize,
        region={"xoff": r.col, "yoff": r.row, "xsize": r.width, "ysize": r.height},
        resampled=ctx.resampled,
        work_size=[ctx.work.RasterXSize, ctx.work.RasterYSize],
        **georef.gsd_fields(ctx.source, ctx.work, ctx.request.gsd),
        tile=ctx.tile,
        stride=ctx.stride,
        blend=ctx.request.blend,
        precision=ctx.precision_for(device),
        bands=ctx.bands,
        total=total,
        **extra,
    )


def run_region(
    ctx: RunContext,
    model: Any,
    device: Any,
    region: Window,
    windows: list[Window],
    paths: dict[str, str],
    progress: Callable[[int, int], None],
    state: Any = None,
    whole: int | None = None,
) -> int:
    """Predict ``region`` of the work grid into new GeoTIFFs (or into the durable chunks of a resumable run).

    Args:
        ctx: the prepared run.
        model: the network.
        device: its torch device.
        region: the work-grid window to write.
        windows: :func:`region_windows` of ``region``, in grid order.
        paths: ``{role: path}`` of the GeoTIFFs to create covering ``region`` (``labels``, optionally
            ``confidence`` and ``uncertainty``) when ``state`` is None.
        progress: called with ``(done, total)`` windows after each batch.
        state: the run's :class:`engine.resume.RunState`: finished rows become chunks listed in its journal
            (:class:`engine.chunks.ChunkSink`), and a resumed run writes only rows at and below its ``rows_done``.
            None: plain new GeoTIFFs (distributed ranks).
        whole: the number of windows of the whole region (a resumed run computes only the last ``windows``);
            default ``len(windows)``. An eager run's pass size is :func:`engine.tiling.pass_size` of it, so a resumed
            run passes as many windows per forward as the run it continues (bit-identical logits) and a fresh run
            pads no pass when a nearby size divides its windows; a compiling run keeps ``--batch-size``, the size of
            its compiled graph.

    Returns:
        the number of windows run through the network.
    """
    if not windows:  # a resumed run whose rows were all written
        return 0
    from engine.inference import window_runner

    runner = window_runner(ctx, model, device, len(windows))
    asked = ctx.request.windows_per_pass
    size = asked if runner.compiling else pass_size(whole or len(windows), asked)
    runner.batch_size = size
    if state is not None:
        sink: streaming.RowSink = state.sink(region)
    else:
        gt, proj = georef.window_geotransform(ctx.work, region), ctx.work.GetProjection()
        w, h = region.width, region.height
        rasters = {
            role: outputs.create_geotiff(path, w, h, gt, proj, *RASTER_TYPES[role]) for role, path in paths.items()
        }
        sink = streaming.GeoTiffSink(rasters, region)
        rasters = {}  # the sink holds the datasets and closes them
    writer = streaming.RowWriter(sink)
    first = state.rows_done if state is not None else region.row  # rows above are written already
    top = max(region.row, windows[0].row)
    uncertainty = ctx.request.uncertainty is not None
    acc = BandAccumulator(region, ctx.info.num_classes, ctx.tile, ctx.request.blend, top=top, uncertainty=uncertainty)
    forward = resources.AdaptiveBatches(runner, size, ctx.on_event, ctx.tile, str(device))
    reader = streaming.read_items(ctx.work, ctx.bands, windows, ctx.tile, ctx.normalizer, ctx.polygons, ctx.cancel)
    items = streaming.prefetch(reader, streaming.PREFETCH_BATCHES * size, ctx.cancel)
    total, done, ran = len(windows), 0, 0
    current_grid_row = windows[0].grid_row
    try:
        for batch in streaming.batches(items, size):
            ctx.check_cancel()
            runnable = [it.data for it in batch if it.data is not None]
            logits = forward(np.stack(runnable)) if runnable else None
            k = 0
            for it in batch:  # in grid order: rows above a new grid row are finished
                if it.window.grid_row != current_grid_row:
                    writer.put(keep_rows(acc.advance_to(it.window.row), first))
                    current_grid_row = it.window.grid_row
                if it.data is not None:
                    assert logits is not None
                    win = it.window
                    acc.add(win, logits[k, :, : win.height, : win.width], it.valid)
                    k += 1
            done, ran = done + len(batch), ran + len(runnable)
            progress(done, total)
        writer.put(keep_rows(acc.finish(), first))
        runner.record()
    finally:
        items.close()  # type: ignore[attr-defined]
        writer.close()
    return ran


def complete(
    ctx: RunContext,
    work: dict[str, str],
    tmps: dict[str, str],
    ran: int,
    t0: float,
    commit: Callable[[dict[str, str], dict[str, str]], None] = outputs.commit_outputs,
) -> PredictResult:
    """Finish outputs, vectorise, count classes, rename temporary files to their final names, emit ``done``.

    Args:
        ctx: the prepared run.
        work: ``{role: path}`` of the rasters :func:`run_region` wrote (or a VRT joining parts).
        tmps: ``{role: path}`` of the temporary outputs, renamed onto the requested paths at the end.
        ran: windows run through the network.
        t0: ``time.monotonic()`` at the start of the run.
        commit: renames ``tmps`` onto the requested paths (a resumable run also drops its journal and chunks).
    """
    try:
        finals, classes = _finish(ctx, work, tmps, commit)
    except (RuntimeError, OSError) as exc:  # GDAL or the file system: a full disk, a removed folder
        raise OutputPathError(f"finishing the outputs failed: {exc}", streaming.WRITE_FAILED_HINT) from exc
    result = PredictResult(finals, classes, ran, round(time.monotonic() - t0, 3))
    ctx.emit(events.DONE, outputs=finals, classes=classes, windows=ran, seconds=result.seconds)
    return result


def _finish(
    ctx: RunContext,
    work: dict[str, str],
    tmps: dict[str, str],
    commit: Callable[[dict[str, str], dict[str, str]], None],
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """:func:`complete`'s work: ``(finals, classes)``."""
    from engine.vectorize import polygonize

    req = ctx.request
    internal = (events.CONFIDENCE,) if req.polygon_confidence else ()
    outputs.finish_rasters(
        work,
        tmps,
        ctx.source,
        ctx.region_src,
        ctx.info,
        resampled=ctx.resampled,
        cog=req.cog,
        check_cancel=ctx.check_cancel,
        internal=internal,
    )
    labels = tmps[events.LABELS]
    classes = outputs.class_statistics(labels, ctx.info, ctx.source, ctx.region_src)
    sources.warn_unserved(ctx.source, classes, ctx.region_src)
    if req.vector:
        ctx.check_cancel()
        area = outputs.pixel_area_m2(ctx.source, ctx.region_src)
        polygonize(labels, tmps[events.VECTOR], ctx.info, ctx.source, area, req.min_area, req.simplify,
                   confidence_path=tmps[events.CONFIDENCE])  # fmt: skip
    ctx.check_cancel()
    outputs.remove_temporaries([tmps[role] for role in internal])
    finals = req.output_paths()
    commit({role: path for role, path in tmps.items() if role in finals}, finals)
    return finals, classes
