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

from engine.atomic import remove_with_sidecars, temporary_path
from engine.errors import CancelledError, EngineError
from engine.events import EventCallback, ProgressEvents
from engine.outputs import RASTER_ROLES, remove_temporaries
from engine.predict import (
    PredictRequest,
    PredictResult,
    complete,
    load_run_network,
    prepare,
    region_windows,
    run_region,
    start_event,
)
from engine.tiling import split_rows

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
    strips = []
    failure: BaseException | None = None
    ran = 0
    try:
        ctx = prepare(request, emit, cancel)
        tmps = {role: temporary_path(path, token[0]) for role, path in request.run_paths().items()}
        strips = split_rows(ctx.region_work, world, ctx.stride)
        model, device = load_run_network(ctx)
        if rank == 0:
            start_event(ctx, len(region_windows(ctx, ctx.region_work)), device)
        if rank < len(strips):
            mine = {role: path + PART_SUFFIX.format(rank=rank) for role, path in _rasters(tmps).items()}
            parts = list(mine.values())
            windows = region_windows(ctx, strips[rank])
            ran = run_region(ctx, model, device, strips[rank], windows, mine, ProgressEvents(ctx.on_event))
    except BaseException as exc:
        failure = exc
    status = torch.tensor([1 if failure else 0, ran], dtype=torch.int64)
    dist.all_reduce(status)
    if status[0] > 0 or ctx is None:
        remove_temporaries(parts)
        dist.barrier()
        if failure is not None:
            raise failure
        raise CancelledError("cancelled: another rank failed or was cancelled")
    result = None
    if rank == 0:
        n = min(world, len(strips))
        vrts: dict[str, str] = {}
        try:
            for role, tmp in _rasters(tmps).items():
                vrts[role] = tmp + ".vrt"
                gdal.BuildVRT(vrts[role], [tmp + PART_SUFFIX.format(rank=r) for r in range(n)]).FlushCache()
            result = complete(ctx, vrts, tmps, int(status[1]), t0)
        except BaseException:
            remove_temporaries(list(tmps.values()))
            raise
        finally:
            for role, vrt in vrts.items():
                remove_with_sidecars([tmps[role] + PART_SUFFIX.format(rank=r) for r in range(n)] + [vrt])
    dist.barrier()
    dist.destroy_process_group()
    return result


def _rasters(tmps: dict[str, str]) -> dict[str, str]:
    """The raster roles (labels, confidence, uncertainty) of ``{role: path}``: what the ranks write in parts."""
    return {role: path for role, path in tmps.items() if role in RASTER_ROLES}
