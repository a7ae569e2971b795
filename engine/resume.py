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

**Durable checkpoints** (:class:`Checkpoints`): after the writer thread wrote a row band, the rasters are flushed and
``fsync``-ed and the journal records the new ``rows_done``, each time the written rows cross an output block row
(:data:`engine.outputs.OUTPUT_BLOCK` rows; flushing a compressed tile and writing it again appends a new copy of it
to the file, so flushing after every band would grow the file), when the region is finished, and when the writer
closes (an error or a cancel). ``rows_done`` is always on a block-row boundary (or the region's end): the tiles
above it are complete and never written again, so a write that fails later (a full disk leaves a truncated tile
behind) or a kill cannot damage them. A resumed run first resets the block rows from ``rows_done`` on to nodata,
writing whole tiles (GDAL then does not read them back, so a damaged tile there does no harm), and recomputes at most
one block row that had been written but not recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from osgeo import gdal

from engine import events, journal, outputs, resources, sources
from engine.blending import CONFIDENCE_NODATA, LABEL_NODATA, FinishedRows
from engine.errors import CancelledError, EngineError, RasterReadError
from engine.georef import window_geotransform
from engine.tiling import Window

if TYPE_CHECKING:
    from engine.predict import PredictRequest, RunContext

gdal.UseExceptions()
log = logging.getLogger("engine")

# PredictRequest fields that do not change the partial rasters' pixels (every other field must match to resume).
NOT_JOURNALED = frozenset(
    {"output", "vector", "min_area", "simplify", "cog", "overwrite", "resume", "device", "batch_size", "threads",
     "compile"}
)  # fmt: skip
PATH_FIELDS = ("input", "model", "confidence")  # journaled as absolute paths
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
    return FinishedRows(first, rows.labels[skip:], rows.confidence[skip:])


def reset_rows(ds: gdal.Dataset, first: int, block_rows: int = outputs.OUTPUT_BLOCK) -> None:
    """Write nodata over rows ``first:`` of ``ds`` (``first`` on a block-row boundary), whole tiles at a time."""
    import numpy as np

    band = ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    dtype = np.uint8 if band.DataType == gdal.GDT_Byte else np.float32
    for y in range(first, ds.RasterYSize, block_rows):
        h = min(block_rows, ds.RasterYSize - y)
        band.WriteArray(np.full((h, ds.RasterXSize), nodata, dtype), 0, y)


class Checkpoints:
    """Makes written row bands durable and records them in the journal (when: see the module docstring).

    Called from the writer thread (:class:`engine.streaming.RowWriter`).

    Args:
        run_journal: the run's journal.
        files: the partial rasters' paths (``fsync``-ed at each checkpoint).
        block_rows: rows of an output block row.
    """

    def __init__(self, run_journal: journal.Journal, files: list[str], block_rows: int = outputs.OUTPUT_BLOCK) -> None:
        self.journal, self.files, self.block = run_journal, files, block_rows
        self.first, self.end = run_journal.region_rows
        self.durable = run_journal.rows_done
        self.written = self.durable

    def recordable(self) -> int:
        """The rows that a checkpoint now would record: the written rows, down to a block-row boundary."""
        if self.written >= self.end:
            return self.end
        return self.first + (self.written - self.first) // self.block * self.block

    def after_write(self, datasets: list[gdal.Dataset], rows_end: int) -> None:
        """Rows above ``rows_end`` are written; checkpoint when they completed a block row or the region."""
        self.written = max(self.written, rows_end)
        if self.recordable() > self.durable:
            self.commit(datasets)

    def commit(self, datasets: list[gdal.Dataset]) -> None:
        """Flush and ``fsync`` the rasters, then record :meth:`recordable` rows in the journal (no-op when not new).

        Raises:
            OSError, RuntimeError: flushing or syncing failed (the journal then still says the previous rows).
        """
        rows = self.recordable()
        if rows <= self.durable:
            return
        for ds in datasets:
            ds.FlushCache()
        for path in self.files:
            journal.fsync_file(path)
        self.journal.record(rows)
        self.durable = rows


class RunState:
    """The resumable state of one single-process run: its journal, partial rasters, and where it starts.

    Use :meth:`open` (it decides between resuming and starting afresh), then :meth:`windows`, :meth:`open_rasters`
    (in :func:`engine.predict.run_region`), and at the end :meth:`hand_over` (success) or :meth:`abandon` (failure).

    Attributes:
        ctx: the prepared run.
        partials: ``{role: path}`` of the partial rasters on the work grid (``labels``, optionally ``confidence``).
        identity: :func:`run_identity` of the run.
        journal: the journal once the rasters exist (or the resumed one).
        rows_done: first work-grid row still to write.
        resumed: whether this run continues an unfinished one.
    """

    def __init__(self, ctx: RunContext, identity: dict[str, Any], resumed: journal.Journal | None) -> None:
        self.ctx, self.identity = ctx, identity
        req = ctx.request
        rasters = {r: p for r, p in req.output_paths().items() if r in (events.LABELS, events.CONFIDENCE)}
        self.partials = resumed.partials if resumed else {r: journal.partial_path(p) for r, p in rasters.items()}
        self.journal = resumed
        self.rows_done = resumed.rows_done if resumed else ctx.region_work.row
        self.resumed = resumed is not None

    @classmethod
    def open(cls, ctx: RunContext) -> RunState:
        """Resume the unfinished run for the request's output (``request.resume``) or remove it and start afresh.

        Raises:
            journal.ResumeError: ``--resume`` and the unfinished run had another input, model or options (listed), or
                its journal cannot be read; nothing is changed on disk.
        """
        req = ctx.request
        path = journal.journal_path(req.output)
        others = [p for r, p in req.output_paths().items() if r == events.CONFIDENCE]
        identity = run_identity(ctx)
        if req.resume and os.path.isfile(path):
            old = journal.Journal.load(path)
            diff = old.mismatches(identity)
            if diff:
                raise journal.ResumeError(
                    f"cannot resume the unfinished run for {req.output}: it was started with other inputs or "
                    f"options ({'; '.join(diff)})"
                )
            if all(os.path.isfile(p) for p in old.partials.values()):
                first, end = old.region_rows
                log.info("resuming %s: rows %d-%d of %d-%d are done", req.output, first, old.rows_done, first, end)
                return cls(ctx, identity, old)
            log.warning("the unfinished run for %s lost its partial rasters: starting from the beginning", req.output)
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

    def open_rasters(self, region: Window) -> tuple[gdal.Dataset, gdal.Dataset | None]:
        """The partial rasters covering ``region`` of the work grid: created (fresh run, then the journal) or opened.

        Raises:
            engine.errors.OutputPathError: a raster cannot be created or opened for writing.
        """
        ctx = self.ctx
        if self.journal is not None:
            opened = []
            for role in (events.LABELS, events.CONFIDENCE):
                if role in self.partials:
                    try:
                        opened.append(gdal.Open(self.partials[role], gdal.GA_Update))
                    except RuntimeError as exc:
                        raise journal.ResumeError(
                            f"cannot open the partial raster {self.partials[role]}: {exc}",
                            "run again without --resume to start from the beginning",
                        ) from exc
            for ds in opened:
                reset_rows(ds, self.rows_done - region.row)
            return opened[0], opened[1] if len(opened) > 1 else None
        gt, proj = window_geotransform(ctx.work, region), ctx.work.GetProjection()
        w, h = region.width, region.height
        labels = outputs.create_geotiff(self.partials[events.LABELS], w, h, gt, proj, gdal.GDT_Byte, LABEL_NODATA)
        conf = None
        if events.CONFIDENCE in self.partials:
            conf = outputs.create_geotiff(
                self.partials[events.CONFIDENCE], w, h, gt, proj, gdal.GDT_Float32, CONFIDENCE_NODATA
            )
        for ds in (labels, conf):
            if ds is not None:
                ds.FlushCache()
        for p in self.partials.values():
            journal.fsync_file(p)
        self.journal = journal.Journal.create(
            journal.journal_path(ctx.request.output), self.identity, self.partials, (region.row, region.row_end)
        )
        return labels, conf

    def checkpoints(self) -> Checkpoints:
        """The checkpointer of the writer thread (after :meth:`open_rasters`)."""
        assert self.journal is not None
        return Checkpoints(self.journal, list(self.partials.values()))

    def hand_over(self, work: dict[str, str]) -> None:
        """Every row is written: rename the partial rasters onto ``work`` (the run's work paths), drop the journal."""
        for role, path in self.partials.items():
            os.replace(path, work[role])
        if self.journal is not None and os.path.isfile(self.journal.path):
            os.remove(self.journal.path)
        self.journal = None

    def abandon(self, exc: BaseException) -> None:
        """The run failed or was cancelled: keep the journal and partial rasters when rows are durable, else remove.

        When kept, ``exc``'s hint (an :class:`engine.errors.EngineError`) says how to continue.
        """
        req = self.ctx.request
        others = [p for r, p in req.output_paths().items() if r == events.CONFIDENCE]
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


def resumable_bytes(request: PredictRequest) -> int:
    """Bytes the partial rasters of an unfinished run for ``request.output`` hold, when ``request.resume``."""
    if not request.resume:
        return 0
    others = [p for role, p in request.output_paths().items() if role == events.CONFIDENCE]
    return sum(os.path.getsize(p) for p in journal.run_files(request.output, others)[1:] if os.path.isfile(p))


def check_disk_space(ctx: RunContext, already: int = 0) -> None:
    """Refuse the run before it starts when its outputs may not fit (:func:`engine.resources.check_disk_space`).

    Args:
        ctx: the prepared run.
        already: bytes a resumed run's partial rasters already hold.
    """
    src, work = ctx.region_src, ctx.region_work
    sizes = resources.estimate_output_bytes(
        ctx.request.output_paths(), src.width * src.height, work.width * work.height, ctx.resampled or ctx.request.cog
    )
    resources.check_disk_space(sizes, already)
