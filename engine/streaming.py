"""The two threads around the network: a prefetching reader of normalised windows and a writer of finished rows.

The reader (:func:`read_items` run by :func:`prefetch`) reads, masks and normalises windows a few batches ahead of
the network, so GDAL's decoding overlaps the forward passes; the writer (:class:`RowWriter`) writes the finished row
bands of :class:`engine.blending.BandAccumulator` while the network runs on the next rows. Both hand exceptions back
to the calling thread, and both hold a bounded queue, so memory stays bounded by the tile size and raster width.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from osgeo import gdal

from engine import faults
from engine.blending import FinishedRows
from engine.errors import CancelledError, OutputPathError
from engine.masks import PolygonMask
from engine.raster_io import Normalizer, read_valid_mask, read_window
from engine.tiling import Window

PREFETCH_BATCHES = 2  # batches the reader thread may read ahead
WRITER_QUEUE = 4  # finished row bands waiting for the writer thread
WRITE_FAILED_HINT = "free disk space or choose another output folder"


@dataclass
class WindowItem:
    """One window ready for the network.

    Attributes:
        window: where it is on the work grid.
        data: ``(C, tile, tile)`` float32 normalised input (zero-padded past the raster's edge), or None when no
            pixel of the window is wanted (fully masked: skipped, not run).
        valid: ``(h, w)`` bool, the pixels to write (valid and inside the polygons), None when skipped.
    """

    window: Window
    data: np.ndarray | None
    valid: np.ndarray | None


def read_items(
    work: gdal.Dataset,
    bands: list[int],
    windows: list[Window],
    tile: int,
    normalizer: Normalizer,
    polygons: PolygonMask | None,
    cancel: threading.Event,
) -> Iterator[WindowItem]:
    """Read, mask and normalise ``windows`` of ``work`` in order.

    Nodata/alpha-masked pixels enter the network as the mean value (normalised 0). Polygons only decide what is
    written and which windows run: the network still sees the real pixels around them, so labels inside equal those
    of a whole-raster run.

    Raises:
        CancelledError: ``cancel`` was set.
    """
    for w in windows:
        if cancel.is_set():
            raise CancelledError("cancelled")
        valid = read_valid_mask(work, bands, w)
        wanted = valid & polygons.rasterize(work, w) if polygons is not None else valid
        if not wanted.any():
            yield WindowItem(w, None, None)
            continue
        x = normalizer(read_window(work, bands, w))  # (C, h, w)
        x[:, ~valid] = 0.0
        padded = np.zeros((x.shape[0], tile, tile), np.float32)  # square input, also for rasters smaller than a tile
        padded[:, : w.height, : w.width] = x
        yield WindowItem(w, padded, wanted)


def prefetch(source: Iterator[WindowItem], size: int, cancel: threading.Event) -> Iterator[WindowItem]:
    """Run ``source`` in a thread, ``size`` items ahead; re-raises its exception in the caller.

    Closing the returned generator (or leaving it by an exception) stops the thread.
    """
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


def batches(items: Iterator[WindowItem], size: int) -> Iterator[list[WindowItem]]:
    """Group ``items`` in order into batches holding ``size`` windows to run (the last batch may hold fewer).

    Skipped (fully masked) windows ride along in the batch they fall in, so rows are finished in grid order.
    """
    batch: list[WindowItem] = []
    for item in items:
        batch.append(item)
        if sum(it.data is not None for it in batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class RowSink(Protocol):
    """Where finished row bands go: :class:`GeoTiffSink` (plain rasters) or :class:`engine.chunks.ChunkSink`."""

    def write(self, rows: FinishedRows) -> None:
        """Write one band of finished rows (bands arrive in row order)."""

    def close(self, ok: bool) -> None:
        """Make what was written final (``ok``: no write failed) and release the files."""


class GeoTiffSink:
    """Writes row bands into open single-band rasters covering ``region`` (distributed ranks' strips).

    Args:
        rasters: ``{role: dataset}``: the uint8 ``labels`` raster and optionally the float32 ``confidence`` and
            ``uncertainty`` rasters, each covering ``region``.
        region: the work-grid window the rasters cover (rows are written at ``row - region.row``).
    """

    def __init__(self, rasters: dict[str, gdal.Dataset], region: Window) -> None:
        self.rasters, self.region = rasters, region

    def write(self, rows: FinishedRows) -> None:
        """Write ``rows`` at their place."""
        y = rows.row - self.region.row
        arrays = rows.arrays()
        for role, ds in self.rasters.items():
            faults.point("tile_write")
            ds.GetRasterBand(1).WriteArray(arrays[role], 0, y)

    def close(self, ok: bool) -> None:
        """Release the rasters (which closes them)."""
        faults.point("flush")
        self.rasters = {}  # the sink held the last references


class RowWriter:
    """Hands finished row bands to a :class:`RowSink` from a thread, so writing overlaps the network.

    Args:
        sink: where the rows go.
    """

    def __init__(self, sink: RowSink) -> None:
        self.sink = sink
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
                self.sink.write(rows)
            except BaseException as exc:
                self.error = exc

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise OutputPathError(f"writing the output failed: {self.error}", WRITE_FAILED_HINT)

    def put(self, rows: FinishedRows | None) -> None:
        """Queue ``rows`` for writing (None: nothing finished yet).

        Raises:
            OutputPathError: an earlier write failed.
        """
        self._raise_if_failed()
        if rows is not None:
            self.q.put(rows)

    def close(self) -> None:
        """Write what is queued, stop the thread and close the sink (rows written so far are made final).

        Raises:
            OutputPathError: a write failed.
        """
        self.q.put(None)
        self.thread.join()
        try:
            self.sink.close(self.error is None)
        except BaseException as exc:
            self.error = self.error or exc
        self._raise_if_failed()
