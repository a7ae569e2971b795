"""The run side of ``--resume``: what must match, where a resumed run starts, and the durable row checkpoints.

The journal's file format, the lock and the plugin's view of an unfinished run are in :mod:`engine.journal`; this
module is what :func:`engine.predict.predict` does with them (:class:`RunState`).

**What must match** (:func:`run_identity`): the input (path, size, bands, data types, geotransform, CRS, nodata, and a
GDAL checksum of the region's first rows), the model file's sha256, the work grid (tile, stride, bands, region), and
every :class:`engine.predict.PredictRequest` field except :data:`NOT_JOURNALED` (fields that do not change the
partial rasters' pixels: where the polygons go and how they are filtered, COG or not, the device, batch size,
threads, compilation, overwrite). A field added to the request later is journaled unless it is listed there. The
input's modification time and file size are deliberately not part of it: a file repaired after a read failure (copied
again) must stay resumable, and its structure and first rows identify it. ``--mask`` is journaled by the sha256 of
its file, not its path.

**Where a resumed run starts** (:func:`windows_to_run`): the journal says the rows above ``rows_done`` are durable.
The blending accumulator's state for the rows below is rebuilt exactly by recomputing every window that touches
them: the run restarts at the first grid row of windows whose last row is at or below ``rows_done``, and the rows it
recomputes above ``rows_done`` are not written again (:func:`keep_rows`). Every unfinished pixel then receives the
same windows in the same order as in an uninterrupted run, so labels and confidence are bit-identical (on the same
device and software; the polygons are made from the labels).

**Durable chunks** (:class:`engine.chunks.ChunkSink`): finished rows are never written into a raster that is written
again. The writer thread gathers finished row bands until they reach :data:`engine.chunks.CHUNK_ROWS` rows (or the
region's end), writes them as one new GeoTIFF per raster output under a ``.part`` name, closes it, ``fsync``-s it,
renames it onto its chunk name, ``fsync``-s the folder, and only then lists it in the journal
(:meth:`engine.journal.Journal.record_chunk`, itself an atomic replace). At the end the outputs are assembled from the
chunks, read only, through a VRT (:meth:`RunState.assemble`); the chunks and the journal are removed only after the
outputs were renamed onto their requested names (:meth:`RunState.commit`).

**Why a kill at any instruction leaves a resumable state.** A byte that the journal declares durable belongs to a
chunk that was complete, synced and renamed before the journal's atomic replace listed it, and nothing opens a
listed chunk for writing again. So whatever instruction a kill (or a power cut) interrupts, the journal on disk is
either the previous or the next one, and every chunk it lists is whole. What the kill can leave besides is debris
outside the journal: a ``.part`` file, a chunk renamed but not yet listed, the journal's own temporary file, or the
killed process's temporary outputs (``.<stem>.tmp-<pid>…``). A run removes that debris while holding the outputs'
lock (:func:`engine.journal.chunk_debris`, :func:`engine.atomic.stale_temporaries`), recomputes from
``rows_done`` (above), and rebuilds the outputs from the chunks exactly as an uninterrupted run would: the assembly
and everything after it read only the chunks, so its bytes do not depend on where the previous process stopped. A kill
between two of the final renames leaves the journal ``committing``; a resumed run may then replace the outputs that
the killed run had already renamed.

Any failure after the first chunk keeps the journal and the chunks, including failures while finishing (overviews,
COG, statistics, polygons); the error's hint names ``--resume``. Only a new run without ``--resume`` (or Cancel in
the plugin's dialog) discards them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any

from osgeo import gdal

from engine import events, journal, outputs, resources, sources
from engine.atomic import remove_with_sidecars
from engine.blending import FinishedRows
from engine.chunks import ChunkSink, write_mosaic
from engine.errors import CancelledError, EngineError, RasterReadError
from engine.georef import window_geotransform
from engine.request import PredictRequest, RunContext
from engine.tiling import Window

gdal.UseExceptions()
log = logging.getLogger("engine")

# PredictRequest fields that do not change the partial rasters' pixels (every other field must match to resume).
NOT_JOURNALED = frozenset(
    {"output", "vector", "min_area", "simplify", "cog", "overwrite", "resume", "device", "batch_size", "threads",
     "compile"}
)  # fmt: skip
PATH_FIELDS = ("input", "model", "confidence", "uncertainty")  # journaled as absolute paths
CHECKSUM_ROWS = 64  # rows of the region whose GDAL checksum identifies the input's pixels
HASH_CHUNK = 1 << 20


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pixel_options(request: PredictRequest) -> dict[str, Any]:
    """The request's fields that change pixels (all but :data:`NOT_JOURNALED`), as JSON values."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(request):
        if f.name in NOT_JOURNALED:
            continue
        value = getattr(request, f.name)
        if f.name in PATH_FIELDS and value:
            value = os.path.abspath(value)
        elif f.name == "mask" and value:
            value = {"sha256": file_sha256(value)}
        values[f.name] = value
    return values


def input_identity(source: gdal.Dataset, bands: list[int], region: Window, remote: bool = False) -> dict[str, Any]:
    """The input raster's structure and a checksum of the region's first rows (see the module docstring).

    A remote input (``/vsicurl/``, a URL, a web service) is identified by its name and structure only: reading rows
    just to identify it would download them once more, and a network failure belongs to the run, where it is
    reported as one (:func:`engine.sources.read_error`), not to the bookkeeping.

    Raises:
        RasterReadError: those rows cannot be read (naming them).
    """
    rows = min(CHECKSUM_ROWS, region.height)
    if remote:
        checksums = None
    else:
        checksums = _checksums(source, bands, region, rows)
    return {
        "size": [source.RasterXSize, source.RasterYSize],
        "band_count": source.RasterCount,
        "data_types": [gdal.GetDataTypeName(source.GetRasterBand(b).DataType) for b in bands],
        "nodata": [source.GetRasterBand(b).GetNoDataValue() for b in bands],
        "geotransform": list(source.GetGeoTransform()),
        "crs": source.GetProjection(),
        "checksum_first_rows": checksums,
    }


def _checksums(source: gdal.Dataset, bands: list[int], region: Window, rows: int) -> list[int]:
    try:
        checksums = [source.GetRasterBand(b).Checksum(region.col, region.row, region.width, rows) for b in bands]
    except RuntimeError as exc:
        raise RasterReadError(
            f"cannot read rows {region.row}-{region.row + rows}, columns {region.col}-{region.col_end} of the raster "
            f"(the file may be truncated or damaged): {exc}",
            "check the file with `gdalinfo -checksum FILE`; copy or export it again",
        ) from exc
    return checksums


def run_identity(ctx: RunContext) -> dict[str, Any]:
    """Everything that must be equal for a run to continue another's partial rasters (a flat JSON dict)."""
    r = ctx.region_work
    identity = {
        **pixel_options(ctx.request),
        "model_sha256": file_sha256(ctx.request.model),
        "input_raster": input_identity(ctx.source, ctx.bands, ctx.region_src, sources.is_remote(ctx.request.input)),
        "tile": ctx.tile,
        "stride": ctx.stride,
        "bands": ctx.bands,
        "num_classes": ctx.info.num_classes,
        "work_size": [ctx.work.RasterXSize, ctx.work.RasterYSize],
        "region_work": [r.row, r.col, r.height, r.width],
    }
    if ctx.request.polygon_confidence:  # its chunks hold a confidence raster the request did not ask for
        identity["polygon_confidence"] = True
    return dict(json_round_trip(identity))


def json_round_trip(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` as it reads back from JSON (tuples become lists), so it compares equal to a loaded journal."""
    import json

    return dict(json.loads(json.dumps(value)))


def windows_to_run(windows: list[Window], rows_done: int) -> list[Window]:
    """The windows a run that has ``rows_done`` durable must compute (row-major ``windows`` of the region).

    All windows of the first grid row that reaches below ``rows_done``, and every later one (see the module docstring).
    """
    for w in windows:
        if w.row_end > rows_done:
            return [v for v in windows if v.grid_row >= w.grid_row]
    return []


def keep_rows(rows: FinishedRows | None, first: int) -> FinishedRows | None:
    """The part of ``rows`` at or below row ``first`` (rows above it are already written), None when nothing is left."""
    if rows is None or rows.row >= first:
        return rows
    skip = first - rows.row
    if skip >= rows.labels.shape[0]:
        return None
    return rows.tail(skip)


class RunState:
    """The resumable state of one single-process run: its journal, its chunks, and where it starts.

    Use :meth:`open` (it decides between resuming and starting afresh), then :meth:`windows`, :meth:`sink` (in
    :func:`engine.predict.run_region`), :meth:`assemble` once every row is durable, :meth:`commit` to rename the
    finished outputs onto their requested names, or :meth:`abandon` on failure.

    Attributes:
        ctx: the prepared run.
        outputs: ``{role: raster output}`` (:meth:`engine.request.PredictRequest.raster_paths`).
        identity: :func:`run_identity` of the run.
        journal: the journal (created by :meth:`sink`, or the resumed one).
        rows_done: first work-grid row still to write.
        resumed: whether this run continues an unfinished one.
    """

    def __init__(self, ctx: RunContext, identity: dict[str, Any], resumed: journal.Journal | None) -> None:
        self.ctx, self.identity = ctx, identity
        req = ctx.request
        self.outputs = req.raster_paths()
        self.journal = resumed
        self.rows_done = resumed.rows_done if resumed else ctx.region_work.row
        self.resumed = resumed is not None

    @classmethod
    def open(cls, ctx: RunContext) -> RunState:
        """Resume the unfinished run for the request's output (``request.resume``) or remove it and start afresh.

        Call it holding the outputs' lock: it also removes the debris a killed run left (see the module docstring).

        Raises:
            journal.ResumeError: ``--resume`` and the unfinished run had another input, model or options (listed), or
                its journal cannot be read; nothing is changed on disk.
        """
        req = ctx.request
        path = journal.journal_path(req.output)
        others = other_rasters(req)
        identity = run_identity(ctx)
        if req.resume and os.path.isfile(path):
            old = journal.Journal.load(path)
            diff = old.mismatches(identity)
            if diff:
                raise journal.ResumeError(
                    f"cannot resume the unfinished run for {req.output}: it was started with other inputs or "
                    f"options ({'; '.join(diff)})"
                )
            if all(os.path.isfile(p) for p in old.files):
                remove_with_sidecars(journal.chunk_debris([req.output, *others], keep=old.files))
                first, end = old.region_rows
                log.info("resuming %s: rows %d-%d of %d-%d are done", req.output, first, old.rows_done, first, end)
                return cls(ctx, identity, old)
            log.warning("the unfinished run for %s lost chunks of its rows: starting from the beginning", req.output)
        elif req.resume:
            log.warning("no unfinished run to resume for %s: starting from the beginning", req.output)
        removed = journal.discard(req.output, others)
        if removed and not req.resume:
            log.warning(
                "removed an unfinished run's files for %s (pass --resume to continue such a run instead): %s",
                req.output,
                ", ".join(os.path.basename(p) for p in removed),
            )
        return cls(ctx, identity, None)

    def windows(self, windows: list[Window]) -> list[Window]:
        """The part of the region's ``windows`` this run computes (:func:`windows_to_run`)."""
        return windows_to_run(windows, self.rows_done) if self.resumed else windows

    def sink(self, region: Window) -> ChunkSink:
        """The writer thread's sink for ``region`` of the work grid (a fresh run creates its journal first)."""
        if self.journal is None:
            self.journal = journal.Journal.create(
                journal.journal_path(self.ctx.request.output), self.identity, (region.row, region.row_end)
            )
        return ChunkSink(self.journal, self.outputs, self.ctx.work, region)

    def assemble(self, vrts: dict[str, str]) -> dict[str, str]:
        """Write a VRT per raster output at ``vrts[role]`` stacking the journal's chunks; return ``vrts``.

        Raises:
            journal.ResumeError: the journal does not cover the region (a bug, never expected).
        """
        current = journal.Journal.load(journal.journal_path(self.ctx.request.output))
        first, end = current.region_rows
        if current.rows_done != end:
            raise journal.ResumeError(f"the journal covers rows {first}-{current.rows_done} of {first}-{end}")
        region = self.ctx.region_work
        gt = window_geotransform(self.ctx.work, region)
        for role, vrt in vrts.items():
            chunks = [(a - first, files[role]) for a, _b, files in current.chunks]
            write_mosaic(vrt, chunks, region.width, region.height, gt, self.ctx.work.GetProjection())
        self.journal = current
        return vrts

    def commit(self, tmps: dict[str, str], finals: dict[str, str]) -> None:
        """Rename the finished ``tmps`` onto ``finals`` (synced first), then remove the journal and the chunks."""
        for path in tmps.values():
            if os.path.isfile(path):
                journal.fsync_file(path)
        current = journal.Journal.load(journal.journal_path(self.ctx.request.output))
        current.mark_committing()
        outputs.commit_outputs(tmps, finals)
        req = self.ctx.request
        journal.discard(req.output, other_rasters(req))
        self.journal = None

    def abandon(self, exc: BaseException) -> None:
        """The run failed or was cancelled: keep the journal and chunks when rows are durable, else remove them.

        When kept, ``exc``'s hint (an :class:`engine.errors.EngineError`) says how to continue.
        """
        req = self.ctx.request
        others = other_rasters(req)
        current = self._current_journal()
        if current is not None and current.has_rows:
            first, end = current.region_rows
            done = f"{current.rows_done - first} of {end - first}"
            note = f"the finished rows ({done}) are kept: {journal.RESUME_ADVICE}"
            log.warning("%s", note)
            if isinstance(exc, CancelledError):
                exc.hint = f"nothing was written under the requested names; {note}"
            elif isinstance(exc, EngineError):
                exc.hint = f"{exc.hint}; {note}" if exc.hint else note
            return
        journal.discard(req.output, others)

    def _current_journal(self) -> journal.Journal | None:
        if self.journal is None:
            return None
        try:
            return journal.Journal.load(self.journal.path)
        except journal.ResumeError:
            return None


def other_rasters(request: PredictRequest) -> list[str]:
    """The run's raster outputs besides the class raster, whose chunks sit next to them (confidence, uncertainty)."""
    return [p for role, p in request.raster_paths().items() if role != events.LABELS]


def resumable_bytes(request: PredictRequest) -> int:
    """Bytes the partial rasters of an unfinished run for ``request.output`` hold, when ``request.resume``."""
    if not request.resume:
        return 0
    others = other_rasters(request)
    return sum(os.path.getsize(p) for p in journal.run_files(request.output, others)[1:] if os.path.isfile(p))


def check_run_fits(ctx: RunContext, already: int = 0) -> None:
    """Refuse the run before it starts when its outputs may not fit (:func:`engine.resources.check_disk_space`).

    Args:
        ctx: the prepared run.
        already: bytes a resumed run's partial rasters already hold.
    """
    src, work = ctx.region_src, ctx.region_work
    # The chunks are a work-grid copy of each raster output until the outputs are assembled from them.
    sizes = resources.estimate_output_bytes(
        ctx.request.run_paths(), src.width * src.height, work.width * work.height, True
    )
    resources.check_disk_space(sizes, already)
