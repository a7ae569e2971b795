"""Sliding windows on a grid anchored to the raster's pixel (0, 0): pure numpy, no GDAL, no torch.

Grid rule (mmseg 0.21 ``slide_inference``): along an axis of ``length`` pixels, window ``i`` starts at
``i * stride`` and ends at ``min(start + tile, length)``; a window that would run past the edge is shifted back so it
ends exactly at the edge (``start = max(end - tile, 0)``). The number of windows is
``max(length - tile + stride - 1, 0) // stride + 1``. So the last window of a row/column may overlap its neighbour by
more than ``tile - stride`` pixels, and every window is ``tile`` long unless the raster itself is shorter.

Edge policy for a raster shorter than a tile along an axis: one window of the raster's own length starting at 0. The
raster engine pads such a window to a full square ``tile × tile`` input (the networks, ViTAE in particular, expect
square inputs) with the normalised value 0 and crops the prediction back; :func:`engine.inference.slide_inference`
in ``"reference"`` mode instead runs it at its own size, like mmseg.

Sub-extents (a pixel window, a bounding box or polygons) select windows of the *whole raster's* grid
(:func:`windows_for_region`), so every pixel of the sub-extent receives exactly the windows it receives in a
whole-raster run, and the labels on the overlap are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels, half-open: rows ``row:row+height``, columns ``col:col+width``.

    ``grid_row``/``grid_col`` are the window's indices on the raster grid (0 for plain rectangles). Ordering is by
    ``(row, col, ...)``, i.e. row-major, which is the processing order.
    """

    row: int
    col: int
    height: int
    width: int
    grid_row: int = 0
    grid_col: int = 0

    @property
    def row_end(self) -> int:
        """First row after the window."""
        return self.row + self.height

    @property
    def col_end(self) -> int:
        """First column after the window."""
        return self.col + self.width

    def intersects(self, other: Window) -> bool:
        """Whether the two windows share at least one pixel."""
        return (
            self.row < other.row_end
            and other.row < self.row_end
            and self.col < other.col_end
            and other.col < self.col_end
        )

    def intersection(self, other: Window) -> Window | None:
        """The pixels both windows cover (grid indices 0), None when they do not overlap."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)


class TilingError(ValueError):
    """Tile size, stride or a region is impossible (non-positive, stride larger than the tile, outside the raster)."""


def _check(length: int, tile: int, stride: int) -> None:
    if length < 1:
        raise TilingError(f"raster length must be >= 1 pixel, got {length}")
    if tile < 1 or stride < 1:
        raise TilingError(f"tile ({tile}) and stride ({stride}) must be >= 1 pixel")
    if stride > tile:
        raise TilingError(f"stride ({stride}) larger than tile ({tile}) would leave pixels unpredicted; lower --stride")


def grid_count(length: int, tile: int, stride: int) -> int:
    """Number of windows along an axis of ``length`` pixels (mmseg 0.21 formula)."""
    _check(length, tile, stride)
    return max(length - tile + stride - 1, 0) // stride + 1


def axis_spans(length: int, tile: int, stride: int) -> np.ndarray:
    """``(n, 2)`` int64 array of half-open ``[start, end)`` spans of the windows along one axis.

    Every span is ``min(tile, length)`` long; the last one ends at ``length``.
    """
    n = grid_count(length, tile, stride)
    ends = np.minimum(np.arange(n, dtype=np.int64) * stride + tile, length)
    starts = np.maximum(ends - tile, 0)
    return np.stack([starts, ends], axis=1)


def grid_windows(height: int, width: int, tile: int, stride: int) -> list[Window]:
    """All windows of a ``height × width`` raster, row-major (grid row by grid row)."""
    rows, cols = axis_spans(height, tile, stride), axis_spans(width, tile, stride)
    return [
        Window(int(r0), int(c0), int(r1 - r0), int(c1 - c0), i, j)
        for i, (r0, r1) in enumerate(rows)
        for j, (c0, c1) in enumerate(cols)
    ]


def windows_for_region(height: int, width: int, tile: int, stride: int, region: Window) -> list[Window]:
    """Windows of the whole raster's grid that intersect ``region`` (row-major).

    Raises:
        TilingError: the region is empty or not inside the raster.
    """
    if region.height < 1 or region.width < 1:
        raise TilingError(f"empty region {region}")
    if region.row < 0 or region.col < 0 or region.row_end > height or region.col_end > width:
        raise TilingError(f"region {region} is not inside the {width}×{height} raster")
    rows, cols = axis_spans(height, tile, stride), axis_spans(width, tile, stride)
    ri = np.nonzero((rows[:, 0] < region.row_end) & (rows[:, 1] > region.row))[0]
    ci = np.nonzero((cols[:, 0] < region.col_end) & (cols[:, 1] > region.col))[0]
    return [
        Window(
            int(rows[i, 0]), int(cols[j, 0]), int(rows[i, 1] - rows[i, 0]), int(cols[j, 1] - cols[j, 0]), int(i), int(j)
        )
        for i in ri
        for j in ci
    ]


def group_by_grid_row(windows: list[Window]) -> list[list[Window]]:
    """Split row-major ``windows`` into lists sharing a ``grid_row`` (the unit of the bounded-memory band)."""
    groups: list[list[Window]] = []
    for w in windows:
        if groups and groups[-1][0].grid_row == w.grid_row:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def split_rows(region: Window, parts: int, align: int) -> list[Window]:
    """Split ``region`` into at most ``parts`` full-width horizontal strips with inner edges on multiples of ``align``.

    Used to share a raster between distributed ranks; strips may be empty for tiny regions and are then left out.
    """
    if parts < 1 or align < 1:
        raise TilingError("parts and align must be >= 1")
    step = -(-region.height // parts)  # ceil
    step = max(align, -(-step // align) * align)
    strips = []
    for top in range(region.row, region.row_end, step):
        bottom = min(top + step, region.row_end)
        strips.append(Window(top, region.col, bottom - top, region.width))
    return strips


def pass_size(n_windows: int, batch_size: int) -> int:
    """Windows per forward pass for a run of ``n_windows`` asked to run ``batch_size`` at a time.

    Every pass holds the same number of windows (a shorter last batch is padded with zero windows: a window's
    logits depend on how many windows share its pass, so a resumed run must use the same number,
    :class:`engine.resources.AdaptiveBatches`). The padding is wasted work: 25 windows in passes of 4 compute 28.
    So the pass size is the one within ``[max(2, batch_size - 1), batch_size + batch_size // 2]`` (memory grows by
    at most half) that computes the fewest windows, ``batch_size`` itself on a tie, then the larger: 25 windows → 5
    (25 computed), 26 → 3 (27), 28 → 4; a run of at most ``batch_size + batch_size // 2`` windows is one pass. A pure
    function of the whole run's window count, so a resumed run (which computes only the rest) passes the same
    ``n_windows`` and gets the same pass size. ``batch_size`` 1 stays 1.
    """
    if batch_size <= 1 or n_windows <= 0:
        return max(batch_size, 1)
    if n_windows <= batch_size + batch_size // 2:
        return n_windows
    low, high = max(2, batch_size - 1), batch_size + batch_size // 2

    def computed(size: int) -> int:
        return -(-n_windows // size) * size

    return min(range(low, high + 1), key=lambda s: (computed(s), s != batch_size, -s))
