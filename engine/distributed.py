"""Scale-out: ``torchrun --nproc-per-node N -m engine predict ... --distributed``.

Each rank takes one horizontal strip of the (work-grid) region (:func:`engine.tiling.split_rows`) and runs the
ordinary single-process pipeline on it; because windows always come from the whole raster's grid, a strip's labels
equal the whole run's on those rows. Parts are written next to the output under temporary names; rank 0 joins them
with a GDAL VRT into the final GeoTIFF (styling, overviews, COG, polygons and class statistics as in a single run),
then removes the parts. The process group uses NCCL when every rank has a GPU, else gloo (CPU). A failure or cancel on
any rank makes every rank stop and remove its files.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from osgeo import gdal

from engine import raster_io
from engine.errors import CancelledError, EngineError, ParameterError
from engine.predict import (
    EventCallback,
    PredictRequest,
    PredictResult,
    _Progress,
    cleanup,
    complete,
    load_network,
    output_paths,
    prepare,
    run_region,
    start_event,
)
from engine.tiling import split_rows, windows_for_region

PART_SUFFIX = ".part{rank}.tif"


class DistributedError(EngineError):
    """The distributed run could not start or another rank failed."""

    hint = "start it with torchrun (e.g. torchrun --nproc-per-node 2 -m engine predict ... --distributed)"


def predict_distributed(
    request: PredictRequest, on_event: EventCallback | None = None, cancel: threading.Event | None = None
) -> PredictResult | None:
    """Run :func:`engine.predict.predict` split over the ranks of a torchrun job; rank 0 returns the result."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise DistributedError("--distributed needs the torchrun environment (RANK, WORLD_SIZE)")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and request.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if request.device is None and torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        request = PredictRequest(**{**request.__dict__, "device": f"cuda:{local}"})
    t0 = time.monotonic()
    quiet: EventCallback = lambda e: None  # noqa: E731
    emit = (on_event or quiet) if rank == 0 else quiet
    token: list[Any] = [os.getpid()]
    dist.broadcast_object_list(token, src=0)  # one temporary-name stem for all ranks
    ctx = None
    parts: list[str] = []
    tmps: dict[str, str] = {}
    failure: BaseException | None = None
    ran = 0
    try:
        ctx = prepare(request, emit, cancel)
        tmps = {k: _shared_tmp(p, token[0]) for k, p in output_paths(request).items()}
        strips = split_rows(ctx.region_work, world, ctx.stride)
        model, device = load_network(ctx)
        if rank == 0:
            total = len(
                windows_for_region(ctx.work.RasterYSize, ctx.work.RasterXSize, ctx.tile, ctx.stride, ctx.region_work)
            )
            start_event(ctx, total, device)
        if rank < len(strips):
            labels_part = tmps["labels"] + PART_SUFFIX.format(rank=rank)
            conf_part = tmps["confidence"] + PART_SUFFIX.format(rank=rank) if request.confidence else None
            parts = [p for p in (labels_part, conf_part) if p]
            ran = run_region(ctx, model, device, strips[rank], labels_part, conf_part, _Progress(ctx))
    except BaseException as exc:
        failure = exc
    status = torch.tensor([1 if failure else 0, ran], dtype=torch.int64)
    dist.all_reduce(status)
    if status[0] > 0 or ctx is None:
        cleanup(parts)
        dist.barrier()
        if failure is not None:
            raise failure
        raise CancelledError("cancelled: another rank failed or was cancelled")
    result = None
    if rank == 0:
        n = min(world, len(split_rows(ctx.region_work, world, ctx.stride)))
        vrts: dict[str, str] = {}
        try:
            for key in ("labels", "confidence") if request.confidence else ("labels",):
                files = [tmps[key] + PART_SUFFIX.format(rank=r) for r in range(n)]
                vrts[key] = tmps[key] + ".vrt"
                gdal.BuildVRT(vrts[key], files).FlushCache()
            result = complete(ctx, vrts["labels"], vrts.get("confidence"), tmps, int(status[1]), t0)
        except BaseException:
            cleanup(list(tmps.values()))
            raise
        finally:
            for key in vrts:
                for r in range(n):
                    raster_io.remove_dataset_files(tmps[key] + PART_SUFFIX.format(rank=r))
                raster_io.remove_dataset_files(vrts[key])
    dist.barrier()
    dist.destroy_process_group()
    return result


def _shared_tmp(path: str, stem: int) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    base, ext = os.path.splitext(name)
    if not os.path.isdir(folder):
        raise ParameterError(f"output folder does not exist: {folder}")
    return os.path.join(folder, f".{base}.tmp-{stem}{ext}")
