"""Durable chunks of finished rows (:class:`ChunkSink`) and the VRT that stacks them (:func:`write_mosaic`).

A resumable run's writer thread hands finished row bands here; why this makes a kill at any instruction resumable is
in :mod:`engine.resume`'s docstring, the file names and the journal in :mod:`engine.journal`.
"""

from __future__ import annotations

import os

import numpy as np
from osgeo import gdal

from engine import events, faults, journal
from engine.atomic import fsync_folder
from engine.blending import CONFIDENCE_NODATA, LABEL_NODATA, UNCERTAINTY_NODATA, FinishedRows
from engine.errors import OutputPathError
from engine.georef import window_geotransform
from engine.tiling import Window

gdal.UseExceptions()

CHUNK_ROWS = 256  # finished rows gathered into one chunk (fewer at the region's end)
CHUNK_OPTIONS = ["COMPRESS=DEFLATE", "ZLEVEL=1", "BIGTIFF=IF_SAFER"]  # written once, read once: fast, striped
RASTER_TYPES = {  # role: (GDAL data type, nodata) of its chunks
    events.LABELS: (gdal.GDT_Byte, LABEL_NODATA),
    events.CONFIDENCE: (gdal.GDT_Float32, CONFIDENCE_NODATA),
    events.UNCERTAINTY: (gdal.GDT_Float32, UNCERTAINTY_NODATA),
}


class ChunkSink:
    """Writes finished rows as durable chunks and lists them in the journal (see the module docstring).

    Runs in the writer thread (:class:`engine.streaming.RowWriter`).

    Args:
        run_journal: the run's journal (rows from its ``rows_done`` on arrive here, in order).
        outputs: ``{role: raster output}`` (``labels``, optionally ``confidence`` and ``uncertainty``); chunks sit next
            to them.
        work: the work-grid dataset (the chunks' georeferencing).
        region: the work-grid window of the run.
        chunk_rows: rows gathered before a chunk is written.
    """

    def __init__(
        self,
        run_journal: journal.Journal,
        outputs: dict[str, str],
        work: gdal.Dataset,
        region: Window,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.journal, self.outputs, self.region, self.chunk_rows = run_journal, outputs, region, chunk_rows
        self.work, self.projection = work, work.GetProjection()
        self.pending: list[FinishedRows] = []

    def write(self, rows: FinishedRows) -> None:
        """Gather ``rows``; write a chunk once :attr:`chunk_rows` rows or the region's end are reached."""
        self.pending.append(rows)
        first = self.pending[0].row
        end = rows.row + rows.labels.shape[0]
        if end - first >= self.chunk_rows or end >= self.region.row_end:
            self._write_chunk()

    def close(self, ok: bool) -> None:
        """Write the gathered rows as a last chunk (when no write failed): they are finished and correct."""
        if ok and self.pending:
            self._write_chunk()
        self.pending = []

    def _write_chunk(self) -> None:
        first = self.pending[0].row
        end = self.pending[-1].row + self.pending[-1].labels.shape[0]
        parts = [r.arrays() for r in self.pending]
        arrays = {role: np.concatenate([p[role] for p in parts]) for role in self.outputs}  # labels first
        window = Window(first, self.region.col, end - first, self.region.width)
        gt = window_geotransform(self.work, window)
        files = {}
        for role, data in arrays.items():
            path = journal.chunk_path(self.outputs[role], first, end)
            part = journal.part_path(path)
            dtype, nodata = RASTER_TYPES[role]
            try:
                ds = gdal.GetDriverByName("GTiff").Create(part, window.width, window.height, 1, dtype, CHUNK_OPTIONS)
            except RuntimeError as exc:
                raise OutputPathError(f"cannot create {part}: {exc}") from exc
            ds.SetGeoTransform(gt)
            if self.projection:
                ds.SetProjection(self.projection)
            band = ds.GetRasterBand(1)
            band.SetNoDataValue(nodata)
            faults.point("tile_write")
            band.WriteArray(data)
            faults.point("flush")
            ds.FlushCache()
            band = ds = None  # closed: a write error surfaces here
            journal.fsync_file(part)
            faults.point("rename")
            os.replace(part, path)
            files[role] = path
        fsync_folder(os.path.dirname(os.path.abspath(self.outputs[events.LABELS])))
        self.journal.record_chunk(first, end, files)
        self.pending = []


def write_mosaic(
    vrt: str, chunks: list[tuple[int, str]], width: int, height: int, geotransform: tuple[float, ...], projection: str
) -> None:
    """Write a VRT of ``width`` × ``height`` pixels that stacks ``chunks`` (``(first row in the VRT, file)``) exactly.

    Written as XML with explicit pixel rectangles (no placement computed from floating-point geotransforms).
    """
    from xml.sax.saxutils import escape

    parts = []
    dtype, nodata = "Byte", 0.0
    for first, path in chunks:
        ds = gdal.Open(path)
        band = ds.GetRasterBand(1)
        h, dtype, nodata = ds.RasterYSize, gdal.GetDataTypeName(band.DataType), band.GetNoDataValue()
        band = ds = None
        parts.append(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(path)}</SourceFilename><SourceBand>1</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{h}"/>'
            f'<DstRect xOff="0" yOff="{first}" xSize="{width}" ySize="{h}"/></SimpleSource>'
        )
    gt = ",".join(repr(float(v)) for v in geotransform)
    xml = (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>{escape(projection)}</SRS>'
        f'<GeoTransform>{gt}</GeoTransform><VRTRasterBand dataType="{dtype}" band="1">'
        f"<NoDataValue>{nodata!r}</NoDataValue>{''.join(parts)}</VRTRasterBand></VRTDataset>"
    )
    with open(vrt, "w", encoding="utf-8") as f:
        f.write(xml)
